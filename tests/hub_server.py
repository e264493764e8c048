"""A tiny Hub-compatible HTTP server on 127.0.0.1, enough for huggingface_hub's download and upload calls.

Implements what `hf_hub_download`, `get_hf_file_metadata`, `HfApi.model_info`, `HfApi.create_repo`
and `HfApi.upload_file` (regular, non-LFS files) request from a Hub, so tests drive the real client
over real HTTP. Model repos only. Every commit is kept, so files can be fetched at old revisions.
Like the Hub, model info reports the parameter count read from the headers of the repo's
`*.safetensors` files (a test may store a header alone: only the header is read).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class Repo:
    def __init__(self) -> None:
        self.commits: dict[str, dict[str, bytes]] = {}  # commit sha -> files
        self.main: str | None = None

    def files(self, revision: str) -> dict[str, bytes] | None:
        sha = self.main if revision == "main" else revision
        return self.commits.get(sha) if sha else ({} if revision == "main" else None)

    def commit(self, changes: dict[str, bytes], message: str) -> str:
        files = dict(self.commits[self.main]) if self.main else {}
        files.update(changes)
        sha = hashlib.sha1(f"{self.main}:{message}:{sorted(files.items())}".encode()).hexdigest()
        self.commits[sha] = files
        self.main = sha
        return sha


def safetensors_parameters(files: dict[str, bytes]) -> dict | None:
    """{"parameters": {dtype: count}, "total": count} from the headers of the *.safetensors files, as the Hub reports."""
    counts: dict[str, int] = {}
    for name, content in files.items():
        if not name.endswith(".safetensors") or len(content) < 8:
            continue
        size = int.from_bytes(content[:8], "little")
        header = json.loads(content[8:8 + size])
        for key, tensor in header.items():
            if key != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + count
    return {"parameters": counts, "total": sum(counts.values())} if counts else None


class HubServer:
    """`with HubServer() as hub:` serves at `hub.url`; `hub.repos`, `hub.requests` and `hub.token` for tests."""

    def __init__(self, token: str | None = None) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.token = token  # when set, writes need "Authorization: Bearer <token>"
        self.gated: set[str] = set()  # repos whose files are refused (as to a user who has not been granted access)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "HubServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def put(self, repo_id: str, path: str, content: bytes, message: str = "add") -> str:
        """Commit a file directly (test set-up); returns the commit sha."""
        return self.repos.setdefault(repo_id, Repo()).commit({path: content}, message)

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, status: int, data) -> None:
                self._reply(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

            def _error(self, status: int, code: str, head: bool = False) -> None:
                self._reply(status, json.dumps({"error": code}).encode(),
                            {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}, head)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _authorised(self) -> bool:
                return hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}"

            def _record(self) -> str:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Authorization")))
                return path

            # GET /api/models/{owner}/{name}[/revision/{revision}]
            def _model_info(self, parts: list[str]) -> None:
                repo_id, revision = "/".join(parts[2:4]), parts[5] if len(parts) == 6 else "main"
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound")
                files = repo.files(revision)
                if files is None:
                    return self._error(404, "RevisionNotFound")
                info = {"id": repo_id, "sha": repo.main if revision == "main" else revision, "private": False,
                        "gated": "manual" if repo_id in hub.gated else False,
                        "siblings": [{"rfilename": name} for name in sorted(files)]}
                parameters = safetensors_parameters(files)
                if parameters:
                    info["safetensors"] = parameters
                self._json(200, info)

            # GET/HEAD /{owner}/{name}/resolve/{revision}/{path}
            def _resolve(self, head: bool) -> None:
                parts = self._record().strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) in (4, 6) and not head:
                    return self._model_info(parts)
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "NotFound", head)
                repo_id, revision, path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", head)
                if repo_id in hub.gated:
                    return self._error(403, "GatedRepo", head)
                files = repo.files(revision)
                if files is None:
                    return self._error(404, "RevisionNotFound", head)
                if path not in files:
                    return self._error(404, "EntryNotFound", head)
                sha = repo.main if revision == "main" else revision
                content = files[path]
                self._reply(200, content, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                                           "Content-Type": "application/octet-stream"}, head)

            def do_HEAD(self) -> None:
                self._resolve(head=True)

            def do_GET(self) -> None:
                self._resolve(head=False)

            def do_POST(self) -> None:
                path = self._record()
                body = self._body()
                if not self._authorised():
                    return self._error(401, "Unauthorized")
                if path == "/api/repos/create":
                    data = json.loads(body)
                    repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                    hub.repos.setdefault(repo_id, Repo())
                    return self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                parts = path.strip("/").split("/")  # api, models, owner, name, preupload|commit, revision
                if len(parts) != 6 or parts[:2] != ["api", "models"]:
                    return self._error(404, "NotFound")
                repo = hub.repos.get("/".join(parts[2:4]))
                if repo is None:
                    return self._error(404, "RepoNotFound")
                if parts[4] == "preupload":
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                             for f in json.loads(body)["files"]]
                    return self._json(200, {"files": files})
                if parts[4] == "commit":
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    message = next((x["value"].get("summary", "") for x in lines if x["key"] == "header"), "")
                    changes = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                               for x in lines if x["key"] == "file"}
                    sha = repo.commit(changes, message)
                    return self._json(200, {"commitUrl": f"{hub.url}/{'/'.join(parts[2:4])}/commit/{sha}",
                                            "commitOid": sha})
                self._error(404, "NotFound")

        return Handler
