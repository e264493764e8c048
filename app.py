"""selfspec web app: autoregressive vs self-speculative decoding, side by side, streaming.

Run: `python app.py` (host and port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT). Also the entry
point of a Hugging Face Space. This file only wires widgets to library calls: the form is
`selfspec.ui.form`, the profile choice `selfspec.ui.profile_choice`, the race `selfspec.ui.race`, the
panels `selfspec.ui.render`, the charts `selfspec.ui.charts`. Importing it loads nothing: `main()` does.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import replace
import time
from pathlib import Path

import gradio as gr

from selfspec.engine.divergence import Divergence
from selfspec.engine.draft import DraftModel
from selfspec.engine.settings import DraftSettings
from selfspec.errors import USER_ERRORS
from selfspec.models.loading import LanguageModel
from selfspec.engine.host import zero_gpu
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.sampling import Sampling
from selfspec.ui.charts import figures
from selfspec.ui.draft_choice import WEIGHT_CHOICES, default_weights
from selfspec.ui.form import MAX_DRAFT, MAX_NEW_TOKENS, Form, form_defaults, parse_form
from selfspec.ui.profile_choice import default_profile as resolve_default_profile
from selfspec.ui.model_choice import DEFAULT_LABEL, ModelShelf, default_choice, device_note, preset_models
from selfspec.ui.profile_choice import MAX_PROFILE_BYTES, uploaded_profile
from selfspec.ui.race import RACE_RULE, Lane, Race, race_divergence, start_race
from selfspec.ui.render import draft_label, panels, summary_line
from selfspec.ui.zero_gpu import gpu_call

log = logging.getLogger("selfspec.app")

ZERO_GPU = zero_gpu()
# The dropdown: the embedded default, then SELFSPEC_MODELS or the front matter's `models:` (ui/model_choice.py).
PRESETS = preset_models(Path(__file__).with_name("README.md"))
DEFAULT_CHOICE = default_choice(PRESETS)

TEXT_EVERY = 0.1  # seconds between streamed text updates
CHARTS_EVERY = 0.75  # seconds between chart updates: re-plotting is the expensive part
RENDER_SHARE = 5  # at least 5x an update's rendering time passes before the next one

EXAMPLES = [
    ["Summarise in two sentences: The Great Barrier Reef is the world's largest coral reef system, made of "
     "over 2,900 reefs stretching 2,300 km off Queensland, Australia. It can be seen from space, supports a "
     "huge diversity of life, and has suffered mass bleaching as ocean temperatures rise."],
    ["Write a Python function that returns the n-th Fibonacci number iteratively."],
    ["What is the capital of Australia, and why was it chosen over Sydney and Melbourne?"],
    ["Translate into French: The weather is lovely today, so we are going to walk by the river."],
    ["A train travels 120 km in 1.5 hours. What is its average speed in km/h? Explain step by step."],
]
EXAMPLE_LABELS = ["Summarise", "Code", "Q&A", "Translate", "Maths"]

# One decoding job per device at a time; this lock also covers a cancelled run's last step.
DEVICE_LOCK = threading.Lock()
DEFAULT_NEW_TOKENS = 96  # the page's token slider starts here
_PROFILES: dict[str, tuple[SkipProfile, str]] = {}

# --- models and profiles ----------------------------------------------------------------------


def get_model(choice: str | None) -> LanguageModel:
    """The model for a dropdown value (None: the default choice); a typed Hub id is checked before any download."""
    return SHELF.get(choice or DEFAULT_CHOICE)


def warm_up(lm: LanguageModel) -> None:
    """A two-token race: the first forwards pay one-off costs, which stay off the first real race. With
    compiled steps, every step a request of the page's default size may run is compiled here too."""
    if ZERO_GPU:  # ZeroGPU attaches a GPU only inside @spaces.GPU calls
        return
    prompt, settings = lm.encode("Hi"), DraftSettings()
    with DEVICE_LOCK:
        for _ in start_race(lm, prompt, SkipProfile.none(lm.model.config.num_hidden_layers), 2, Sampling(), settings):
            pass
        lm.engine.warm_up(len(prompt), DEFAULT_NEW_TOKENS, replace(settings, max_draft=MAX_DRAFT).widest_step)


SHELF = ModelShelf(PRESETS, DEFAULT_CHOICE, prepare=warm_up)  # device and dtype: models/placement.py


def default_profile(lm: LanguageModel) -> tuple[SkipProfile, str]:
    """The model's skip profile and where it came from, looked up once per model."""
    if lm.name not in _PROFILES:
        _PROFILES[lm.name] = resolve_default_profile(lm)
    return _PROFILES[lm.name]


def pick_profile(lm: LanguageModel, upload: str | None) -> tuple[SkipProfile, str]:
    return uploaded_profile(lm, upload) if upload else default_profile(lm)


# --- the comparison ---------------------------------------------------------------------------


def result_json(lm: LanguageModel, draft: DraftModel, race: Race, form: Form, running: bool,
                divergence: Divergence | None = None) -> dict:
    """What API clients read: both texts, token ids and summaries (timed by each method's own clock)."""
    # The draft's own profile: auto may leave the chosen profile's skips out (ui/draft_choice.py).
    out = {"model": lm.name, "profile": draft.profile.to_dict(), "running": running,
           "draft": {"weights": draft.weights, "extra_bytes": draft.extra_bytes}}
    for key, lane in (("autoregressive", race.autoregressive), ("self_speculative", race.speculative)):
        out[key] = {"text": lm.decode(lane.token_ids), "token_ids": lane.token_ids, **lane.summary().to_dict()}
    out["speedup"] = race.speedup
    out["identical"] = race.identical if form.sampling.greedy and not running else None
    out["divergence"] = divergence.to_dict() if divergence is not None else None
    return out


def view(lm, draft, note, race: Race, form: Form, running: bool, charts: bool,
         divergence: Divergence | None = None) -> tuple:
    ar_html, spec_html = panels(lm.decode, race, running, draft_label(draft))
    plots = figures(race, form.max_draft) if charts else (gr.skip(),) * 4
    summary = summary_line(race, form.sampling.greedy, running, divergence) + "\n\n" + note
    return (ar_html, spec_html, *plots, summary, result_json(lm, draft, race, form, running, divergence))


def compare(prompt, model, profile_file, max_new_tokens, mode, temperature, top_p, seed, max_draft, adaptive,
            draft_weights="auto", controller=True):
    """Race autoregressive and self-speculative decoding on one prompt; streams both as they go.

    The model (a typed one too) is loaded here, outside the GPU call: on ZeroGPU its weights go to cuda
    in the main process, which lends them to every call, and a model loaded inside a call would be
    loaded again by each call. The GPU work (the draft, the race) is `race`, the `@spaces.GPU` call."""
    try:
        lm = get_model(model)
        pick_profile(lm, profile_file)  # the default one is looked up once, here, not on the GPU's time
    except USER_ERRORS as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    except Exception as exc:  # never a stack trace in the page; the log keeps it
        log.exception("could not load the model")
        raise gr.Error(f"could not start: {type(exc).__name__}: {exc}", print_exception=False) from None
    yield from race(prompt, model, profile_file, max_new_tokens, mode, temperature, top_p, seed, max_draft,
                    adaptive, draft_weights, controller)


@gpu_call  # ZeroGPU lends a GPU per call (ui/zero_gpu.py); elsewhere a no-op
def race(prompt, model, profile_file, max_new_tokens, mode, temperature, top_p, seed, max_draft, adaptive,
         draft_weights, controller):
    """The GPU part of `compare`: the model is already loaded (a shelf hit), the draft is built and raced."""
    try:
        form = parse_form(max_new_tokens, mode, temperature, top_p, seed, max_draft, adaptive, draft_weights,
                          controller)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty: type something or pick an example")
        lm = get_model(model)
        profile, note = pick_profile(lm, profile_file)
        settings = form.settings(profile)
        draft, draft_note = SHELF.draft(lm, profile, settings, DEVICE_LOCK)  # weights: ui/draft_choice.py
        note = f"{note} {draft_note} {device_note(lm)}"
        prompt_ids = lm.encode(prompt)
        race_steps = start_race(lm, prompt_ids, profile, form.max_new_tokens, form.sampling, settings,
                                DEVICE_LOCK, draft)
    except USER_ERRORS as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    except Exception as exc:  # never a stack trace in the page; the log keeps it
        log.exception("could not start the race")
        raise gr.Error(f"could not start: {type(exc).__name__}: {exc}", print_exception=False) from None
    # The first tokens go out at once; the first charts only after CHARTS_EVERY (they cost more).
    next_text, next_charts = -math.inf, time.monotonic() + CHARTS_EVERY
    race = None
    try:
        for race in race_steps:
            now = time.monotonic()
            if now < next_text:
                continue
            charts = now >= next_charts
            update = view(lm, draft, note, race, form, running=True, charts=charts)
            # Long texts take longer to render: space updates so rendering keeps to a small share of the time.
            pause = RENDER_SHARE * (time.monotonic() - now)
            next_text = now + max(TEXT_EVERY, pause)
            next_charts = now + max(CHARTS_EVERY, pause) if charts else next_charts
            yield update
    except Exception as exc:  # never a stack trace in the page; the log keeps it
        log.exception("decoding failed")
        raise gr.Error(f"decoding failed: {exc}", print_exception=False) from None
    finally:
        race_steps.close()  # also on Stop: closes both decoders
    # Differing greedy outputs are explained: where they part, and how close the full model's choice was.
    divergence = race_divergence(lm, prompt_ids, race, DEVICE_LOCK) if form.sampling.greedy else None
    yield view(lm, draft, note, race, form, running=False, charts=True, divergence=divergence)


# --- sharing: the prompt and settings travel in the page's query string ------------------------

SHARED = ["prompt", "model", "max_new_tokens", "mode", "temperature", "top_p", "seed", "max_draft", "adaptive",
          "draft_weights", "controller"]

SHARE_JS = """(%s) => {
  const values = {%s};
  const url = window.location.origin + window.location.pathname + "?" + new URLSearchParams(values).toString();
  if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
  return url;
}""" % (", ".join(SHARED), ", ".join(SHARED))


def restore(request: gr.Request):
    """Page load: fill the form from the query string (a shared link); ignore what does not parse."""
    params = dict(request.query_params) if request is not None else {}
    convert = {"prompt": str, "model": str, "max_new_tokens": int, "mode": str, "temperature": float,
               "top_p": float, "seed": int, "max_draft": int, "adaptive": lambda v: v.lower() == "true",
               "draft_weights": str, "controller": lambda v: v.lower() == "true"}
    if "model" not in params:  # the draft length and exit the default profile was measured with
        params = {**form_defaults(default_profile(get_model(None))[0]), **params}
    values = []
    for name in SHARED:
        try:
            values.append(convert[name](params[name]) if name in params else gr.skip())
        except ValueError:
            values.append(gr.skip())
    return values


def sampling_controls(mode: str):
    """Temperature, top-p and seed only matter when sampling."""
    return [gr.update(interactive=mode == "sampling")] * 3


# --- the page ---------------------------------------------------------------------------------


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="selfspec: self-speculative decoding") as demo:
        gr.Markdown(
            "## Self-speculative decoding, live\n"
            "One model, two roles ([Draft & Verify](https://arxiv.org/abs/2309.08168)): a cheaper copy of the "
            "model itself (some of its sublayers skipped, as in the paper, or its weights in 4 or 8 bits, or both: "
            "whichever measures fastest here) drafts tokens, and the text so far offers some to copy; the full "
            "model checks them all in one pass. "
            "The output is exactly the full model's; the question is only which side gets there first."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                prompt = gr.Textbox(label="Prompt", lines=4, max_lines=12, placeholder="Ask something…",
                                    elem_id="prompt")
                gr.Examples(EXAMPLES, inputs=[prompt], example_labels=EXAMPLE_LABELS, label="Examples")
                with gr.Row():
                    run = gr.Button("Run both", variant="primary", elem_id="run", min_width=90)
                    stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=70)
                    share = gr.Button("Share link", variant="secondary", elem_id="share", min_width=90)
                share_link = gr.Textbox(label="Link to this prompt and settings", buttons=["copy"],
                                        interactive=False, elem_id="share-link")
            with gr.Column(scale=2, min_width=300):
                model = gr.Dropdown([DEFAULT_LABEL, *PRESETS], value=DEFAULT_CHOICE, label="Model",
                                    allow_custom_value=True, info="or type a Hub model id")
                max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_NEW_TOKENS, step=1, label="Max new tokens")
                with gr.Accordion("Decoding and drafting", open=False):
                    mode = gr.Radio(["greedy", "sampling"], value="greedy", label="Decoding")
                    temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature (sampling)",
                                            interactive=False)
                    top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p (sampling)", interactive=False)
                    seed = gr.Number(value=0, precision=0, label="Seed (sampling; empty = random)", interactive=False)
                    max_draft = gr.Slider(1, MAX_DRAFT, value=4, step=1, label="Max draft length K")
                    adaptive = gr.Checkbox(value=True, label="Draft exit: stop drafting when the draft is unsure "
                                                             "(the profile's rule, else adaptive; drafts that skip sublayers only)")
                    draft_weights = gr.Dropdown(list(WEIGHT_CHOICES), value=default_weights(None),
                                                label="Draft weights",
                                                info="full: the paper's draft, no extra memory; int8/int4: low-bit "
                                                     "copies beside the model (their memory is shown); auto: "
                                                     "measured here, the fastest taken")
                    controller = gr.Checkbox(value=True, label="Controller: choose each step's draft length from "
                                                               "measured costs; a plain step (no draft) when "
                                                               "drafting does not pay")
                with gr.Accordion("Skip profile", open=False):
                    gr.Markdown("Picked automatically for the model (Hub, cache or bundled). "
                                "Or upload one: `{\"num_layers\": L, \"attn\": [...], \"mlp\": [...]}`.")
                    profile_file = gr.File(label="Custom skip profile (JSON)", file_types=[".json"],
                                           type="filepath")
        summary = gr.Markdown("Press **Run both** to race the two methods.", elem_id="summary")
        with gr.Row(equal_height=True):
            empty = panels(lambda ids: "", Race(Lane("autoregressive"), Lane("self-speculative")), running=False)
            with gr.Column(min_width=300):  # the two panels stack on a phone
                ar_panel = gr.HTML(empty[0], elem_id="ar-panel", min_height=120)
            with gr.Column(min_width=300):
                spec_panel = gr.HTML(empty[1], elem_id="spec-panel", min_height=120)
        gr.Markdown(f"*How the race is run:* {RACE_RULE}")
        with gr.Row():
            race_plot = gr.Plot(show_label=False, elem_id="race-plot", min_width=320)
            speed_plot = gr.Plot(show_label=False, elem_id="speed-plot", min_width=320)
        with gr.Row():
            acceptance_plot = gr.Plot(show_label=False, elem_id="acceptance-plot", min_width=320)
            lengths_plot = gr.Plot(show_label=False, elem_id="lengths-plot", min_width=320)
        with gr.Accordion("Result as JSON (what the API returns)", open=False):
            result = gr.JSON(label="result")

        inputs = [prompt, model, profile_file, max_new_tokens, mode, temperature, top_p, seed, max_draft, adaptive,
                  draft_weights, controller]
        outputs = [ar_panel, spec_panel, race_plot, speed_plot, acceptance_plot, lengths_plot, summary, result]
        running = run.click(compare, inputs, outputs, api_name="compare", concurrency_limit=1,
                            concurrency_id="device", show_progress="full", show_progress_on=[ar_panel, spec_panel])
        stop.click(None, None, None, cancels=[running])
        shared = [prompt, model, max_new_tokens, mode, temperature, top_p, seed, max_draft, adaptive, draft_weights,
                  controller]
        share.click(None, shared, [share_link], js=SHARE_JS)
        demo.load(restore, None, shared, api_visibility="private")
        mode.change(sampling_controls, mode, [temperature, top_p, seed], api_visibility="private")
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


def start_up() -> None:
    """The one-time load of the default model, its profile and its draft (auto measures once), before the
    first visitor (not at import). On ZeroGPU the draft is built in the first call, where a GPU is lent."""
    lm = get_model(None)
    profile, _ = default_profile(lm)
    if not ZERO_GPU:  # the draft the page starts with
        settings = DraftSettings.from_profile(profile, draft_weights=default_weights(profile), controller=True)
        SHELF.draft(lm, profile, settings, DEVICE_LOCK)


def main() -> None:
    start_up()
    demo.launch(max_file_size=MAX_PROFILE_BYTES)  # the server refuses larger uploads; uploaded_profile too


demo = build_demo()  # widgets only: importing this module loads no model and queries no Hub

if __name__ == "__main__":
    main()
