"""The built-in benchmark suite: prompts in the six categories of Spec-Bench, written for this project.

Spec-Bench (Xia et al. 2024) groups speculative-decoding workloads into multi-turn conversation,
translation, summarisation, question answering, mathematical reasoning and retrieval-augmented
generation. The texts below are our own (no dataset is copied); each entry is a chat: a list of
{"role", "content"} messages ending with a user turn. A user's JSONL file can replace the suite:
one object per line with "category" and either "prompt" (a string) or "messages" (a chat).

`CALIBRATION` holds separate texts used only to choose the draft head's vocabulary, so that the
benchmark prompts never tune the draft they measure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CATEGORIES = ("multi-turn", "translation", "summarization", "qa", "math", "rag")


@dataclass(frozen=True)
class BenchPrompt:
    category: str
    messages: tuple[dict, ...]


def _user(text: str) -> tuple[dict, ...]:
    return ({"role": "user", "content": text},)


_ARTICLE_HARBOUR = (
    "The town of Wexley voted on Monday to rebuild its old harbour wall, which storms damaged twice "
    "in the past three winters. The project will cost about 4 million euros, of which the regional "
    "government pays half. Fishermen had asked for the repair for years, saying that boats could no "
    "longer shelter in the harbour during strong easterly winds. Some residents opposed the plan, "
    "arguing that the money should go to the local school, whose roof leaks. The mayor said that "
    "work will begin in April and last eighteen months, and that a small part of the budget will be "
    "used to build a public walkway on top of the new wall. Engineers expect the wall to withstand "
    "waves up to six metres high."
)
_ARTICLE_BATTERY = (
    "A research group at a northern university reported a battery made mostly of iron, salt water "
    "and air. The cells store less energy per kilogram than lithium batteries, so they are not meant "
    "for phones or cars. Instead, the team wants to use them next to wind and solar farms, where weight "
    "does not matter but cost does. In tests, a prototype the size of a refrigerator delivered power "
    "for four days without recharging. The materials cost about a tenth of those in a lithium cell, "
    "and none of them are scarce. The researchers warn that the cells lose some capacity after a few "
    "thousand cycles and that a factory able to make them in large numbers does not exist yet."
)
_ARTICLE_LIBRARY = (
    "The city library will stay open until ten in the evening from next month, the council announced. "
    "Students had collected more than two thousand signatures asking for longer hours, because many of "
    "them share small flats and have no quiet place to study. The extra hours will be staffed by four "
    "new part-time employees. The library will also lend laptops and portable internet routers for up "
    "to two weeks. Librarians say visits have grown by a third since the building was renovated last "
    "year, and that the children's reading club now has a waiting list."
)

_DOCS_VOLCANO = (
    "Document 1: Mount Keller is a stratovolcano in the northern range. Its last eruption was in 1911, "
    "when ash fell on villages up to forty kilometres away.\n"
    "Document 2: The Keller observatory, opened in 1956, measures ground movement and gas emissions. "
    "It reported a small rise in sulphur dioxide in 2019 but no signs of magma moving upwards.\n"
    "Document 3: Hiking on Mount Keller is allowed from June to September. The summit trail is 11 km "
    "long and climbs 1,400 metres."
)
_DOCS_TEA = (
    "Document 1: Green and black tea come from the same plant, Camellia sinensis. Black tea leaves are "
    "fully oxidised before drying; green tea leaves are heated early to stop oxidation.\n"
    "Document 2: A cup of black tea holds about 40 to 70 mg of caffeine, green tea about 20 to 45 mg, "
    "depending on the leaves and how long they steep.\n"
    "Document 3: Herbal infusions such as chamomile or peppermint are not made from the tea plant and "
    "contain no caffeine."
)
_DOCS_RAIL = (
    "Document 1: The coastal railway opened in 1874 and connected the port with the capital in nine "
    "hours.\n"
    "Document 2: Electrification of the line was completed in 1962, cutting the journey to four hours.\n"
    "Document 3: Since the high-speed link opened in 2011, trains between the port and the capital take "
    "one hour and fifty minutes, and the old line carries mostly freight."
)

SUITE: tuple[BenchPrompt, ...] = (
    BenchPrompt("multi-turn", (
        {"role": "user", "content": "I want to start running. How often should I run in the first month?"},
        {"role": "assistant", "content": "Three times a week is a good start: run-walk intervals of about "
         "twenty minutes, with a rest day between runs so that your legs can adapt."},
        {"role": "user", "content": "What should I eat before a morning run, and how long before?"},
    )),
    BenchPrompt("multi-turn", (
        {"role": "user", "content": "Can you suggest a name for a small bakery that sells bread and cakes?"},
        {"role": "assistant", "content": "How about \"The Rising Loaf\"? It is friendly, easy to remember "
         "and hints at fresh bread."},
        {"role": "user", "content": "Nice. Now write a short slogan for it and a two-sentence description "
         "for the shop window."},
    )),
    BenchPrompt("multi-turn", (
        {"role": "user", "content": "What is the difference between a list and a tuple in Python?"},
        {"role": "assistant", "content": "A list can be changed after it is created; a tuple cannot. Tuples "
         "can therefore be used as dictionary keys, and lists cannot."},
        {"role": "user", "content": "Give me an example where using a tuple is the better choice, with code."},
    )),
    BenchPrompt("translation", _user(
        "Translate into English: \"Der Zug nach Hamburg hat heute zwanzig Minuten Verspätung, weil ein "
        "Baum auf die Gleise gefallen ist. Die Fahrgäste werden gebeten, auf dem Bahnsteig zu warten.\"")),
    BenchPrompt("translation", _user(
        "Translate into English: \"La bibliothèque municipale sera fermée lundi pour des travaux. Les "
        "livres empruntés peuvent être rendus à la boîte aux lettres devant l'entrée principale.\"")),
    BenchPrompt("translation", _user(
        "Translate into English: \"El mercado abre todos los sábados a las ocho de la mañana. Allí se "
        "venden frutas, verduras, queso y pan de los pueblos cercanos.\"")),
    BenchPrompt("summarization", _user(f"Summarize the following article in three sentences.\n\n{_ARTICLE_HARBOUR}")),
    BenchPrompt("summarization", _user(f"Summarize the following article in three sentences.\n\n{_ARTICLE_BATTERY}")),
    BenchPrompt("summarization", _user(f"Summarize the following article in three sentences.\n\n{_ARTICLE_LIBRARY}")),
    BenchPrompt("qa", _user("Why is the sky blue during the day but red at sunset?")),
    BenchPrompt("qa", _user("What does a vaccine do in the human body?")),
    BenchPrompt("qa", _user("Who was Ada Lovelace and why is she remembered?")),
    BenchPrompt("math", _user(
        "A shop sells pencils at 3 for 45 cents. How much do 12 pencils cost? Think step by step.")),
    BenchPrompt("math", _user(
        "Tom is 4 years older than his sister. In 6 years the sum of their ages will be 40. How old is "
        "Tom now? Explain your reasoning step by step.")),
    BenchPrompt("math", _user(
        "A train travels 180 km in 2 hours and then 120 km in 1.5 hours. What is its average speed for "
        "the whole trip? Show your work.")),
    BenchPrompt("rag", _user(f"{_DOCS_VOLCANO}\n\nUsing only the documents above, answer: when did Mount "
                             "Keller last erupt, and is an eruption expected soon?")),
    BenchPrompt("rag", _user(f"{_DOCS_TEA}\n\nUsing only the documents above, answer: which has more "
                             "caffeine, green or black tea, and why do they differ?")),
    BenchPrompt("rag", _user(f"{_DOCS_RAIL}\n\nUsing only the documents above, answer: how has the "
                             "journey time between the port and the capital changed over time?")),
)

CALIBRATION: tuple[str, ...] = (
    "Explain how a refrigerator keeps food cold, in simple words.",
    "Write a short email to a colleague asking to move our meeting from Thursday to Friday afternoon.",
    "Translate into English: \"Wir haben gestern im Garten gegessen, weil das Wetter so schön war.\"",
    "Summarize the plot of a story in which a young fox learns to share food with the other animals "
    "of the forest during a long winter.",
    "If a recipe needs 250 grams of flour for 4 people, how much flour is needed for 10 people? "
    "Explain step by step.",
    "What are three good habits for writing readable code? Give a short example for each.",
    "Describe the water cycle and name its main stages.",
    "The museum, founded in 1890, holds paintings, maps and old tools from the region. Using this "
    "text, answer: what kinds of objects does the museum hold?",
)


def builtin_suite(per_category: int | None = None, categories: tuple[str, ...] = CATEGORIES) -> list[BenchPrompt]:
    """The built-in prompts, at most `per_category` of each chosen category, in suite order."""
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
    chosen, counts = [], {c: 0 for c in categories}
    for p in SUITE:
        if p.category in counts and (per_category is None or counts[p.category] < per_category):
            chosen.append(p)
            counts[p.category] += 1
    return chosen


def read_jsonl(path: str | Path) -> list[BenchPrompt]:
    """A user's prompt file: one JSON object per line with "category" and "prompt" or "messages"."""
    prompts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise ValueError(f"{path}:{number}: expected an object with \"prompt\" or \"messages\"")
        category = str(item.get("category", "custom"))
        if isinstance(item.get("prompt"), str) and item["prompt"].strip():
            messages = _user(item["prompt"])
        elif _is_chat(item.get("messages")):
            messages = tuple(item["messages"])
        else:
            raise ValueError(f"{path}:{number}: needs a non-empty \"prompt\" string or a \"messages\" list "
                             "of {\"role\", \"content\"} ending with a user turn")
        prompts.append(BenchPrompt(category, messages))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def _is_chat(messages) -> bool:
    return (isinstance(messages, list) and len(messages) > 0
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages)
            and messages[-1]["role"] == "user")
