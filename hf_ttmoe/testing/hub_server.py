"""A local Hugging Face Hub, to test Hub workflows offline: the HTTP protocol `huggingface_hub` speaks, stdlib only.

In a test or script, start it in-process and point the already-imported client at it (`client_settings`):

    ```python
    import os

    from hf_ttmoe.testing import TOKEN, HubServer, client_settings

    with HubServer("hub_root") as hub:   # 127.0.0.1, free ports; objects stored under hub_root/
        environment, attributes = client_settings(hub.url, TOKEN, "hf_cache")
        os.environ.update(environment)
        for obj, name, value in attributes:   # in pytest: monkeypatch.setenv / monkeypatch.setattr
            setattr(obj, name, value)
        ...                                   # push_to_hub("org/my-expert"), from_pretrained("org/my-expert"), ...
    ```

Or run it as a process and point other processes at it with the environment it prints (until Ctrl-C):

    python -m hf_ttmoe.testing [--root DIR]
    # prints: export HF_ENDPOINT=http://127.0.0.1:PORT HF_TOKEN=hf_test_token HF_HUB_DISABLE_XET=1 HF_HUB_CACHE=...

The one token is `TOKEN` (user `tester`, member of `org`): repos can be created under those two namespaces.

Repos live in memory (commits, branches, tags) with file contents under a directory on disk. Commits get git-like
ids (sha1 of the tree, parent, message and a counter); regular files are addressed by their git blob sha1, large files
go through the LFS batch API (basic transfer: PUT to a second, "CDN" origin) and are addressed by sha256. Downloads
follow the Hub: `HEAD/GET /{repo}/resolve/{rev}/{path}` answers with `X-Repo-Commit` and `ETag`, and for LFS files a
302 to the CDN origin carrying `X-Linked-Etag` / `X-Linked-Size`; errors carry `X-Error-Code` (RepoNotFound,
RevisionNotFound, EntryNotFound).

Endpoints: `GET /api/whoami-v2`; `POST /api/repos/create` (409 still returns `url`); `DELETE /api/repos/delete`;
`POST /api/validate-yaml`; `GET /api/models/{repo}[/revision/{rev}]`; `GET /api/models/{repo}/tree/{rev}[/{path}]`;
`POST /api/models/{repo}/paths-info/{rev}`; `POST /api/models/{repo}/preupload/{rev}`;
`POST /{repo}.git/info/lfs/objects/batch` (+ `/verify`); `POST /api/models/{repo}/commit/{rev}` (NDJSON);
`GET /api/models/{repo}/refs`; `GET /api/models/{repo}/commits/{rev}`; `POST|DELETE /api/models/{repo}/branch/{b}`;
`POST /api/models/{repo}/tag/{rev}`, `DELETE /api/models/{repo}/tag/{tag}`; `HEAD|GET /{repo}/resolve/{rev}/{path}`.

Faults, to test what a client does with a broken download:
    ```python
    hub.faults[("org/x", "model.safetensors")] = "truncate"   # serve half the bytes as if complete
    ```
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

USER = "tester"
ORGS = ("org",)
TOKEN = "hf_test_token"
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.gguf", "*.npy", "*.npz",
                "*.msgpack", "*.zip", "*.tar.gz", "*.pkl", "*.parquet")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
FAULTS = ("truncate", "corrupt")


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content (what the Hub lists as a file's `oid`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class FileEntry:
    """One file of a commit: `oid` is its git blob id (of the LFS pointer for LFS files), `sha256` its LFS oid."""

    oid: str
    size: int
    sha256: str | None = None

    @property
    def etag(self) -> str:
        return self.sha256 or self.oid


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        """A branch, a tag or a full commit sha -> its commit (None when unknown)."""
        sha = self.branches.get(rev) or self.tags.get(rev) or (rev if COMMIT_SHA.match(rev) else None)
        return self.commits.get(sha) if sha else None


class HubError(Exception):
    """An HTTP error answer: status, `X-Error-Code` and message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


class HubStore:
    """Repos, commits and content-addressed objects under `root` (thread-safe)."""

    def __init__(self, root: str | os.PathLike):
        self.objects = Path(root, "objects")
        self.objects.mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()
        self._counter = itertools.count()

    # ----- objects -----

    def put_object(self, key: str, data: bytes) -> None:
        path = self.objects / key
        if path.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.objects, prefix=f".{key}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def has_object(self, key: str) -> bool:
        return (self.objects / key).exists()

    def read_object(self, key: str) -> bytes:
        return (self.objects / key).read_bytes()

    # ----- repos and commits -----

    def repo(self, repo_id: str, user: str | None) -> Repo:
        """The repo, or RepoNotFound (401, as the Hub answers for missing and for private repos alike)."""
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def commit_at(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id, private)
        self.put_object(git_blob_sha1(GITATTRIBUTES), GITATTRIBUTES)
        first = self.new_commit(repo, None, "initial commit", "", {
            ".gitattributes": FileEntry(git_blob_sha1(GITATTRIBUTES), len(GITATTRIBUTES))})
        repo.branches["main"] = first.sha
        self.repos[repo_id] = repo
        return repo

    def new_commit(self, repo: Repo, parent: Commit | None, title: str, message: str,
                   files: dict[str, FileEntry]) -> Commit:
        tree = "".join(f"{path}\0{entry.oid}\n" for path, entry in sorted(files.items()))
        body = f"tree {hashlib.sha1(tree.encode()).hexdigest()}\nparent {parent.sha if parent else ''}\n" \
               f"counter {next(self._counter)} {time.time_ns()}\n\n{title}\n\n{message}"
        sha = hashlib.sha1(f"commit {len(body)}\0{body}".encode()).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        commit = Commit(sha, parent.sha if parent else None, title, message, date, files)
        repo.commits[sha] = commit
        return commit


def is_lfs(path: str, size: int, sample: bytes) -> bool:
    """Upload mode as the Hub decides it: `.gitattributes` patterns, size, or binary content."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample


class HubServer:
    """A Hub (API + resolve) and a CDN origin (LFS object uploads and downloads) on 127.0.0.1, in daemon threads.

    Args:
        root: directory for the stored objects.
        token: the one valid access token (user `tester`, member of `org`).

    Attributes:
        url / cdn_url: base URLs of the two origins.
        requests: `(method, path)` of every request received, in order.
        faults: `{(repo_id, path): "truncate" | "corrupt"}`: the CDN serves that LFS file cut to half its size (with a
            matching Content-Length, so the client sees a short, "complete" body) or with flipped bytes.
    """

    def __init__(self, root: str | os.PathLike, token: str = TOKEN):
        self.store = HubStore(root)
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self.faults: dict[tuple[str, str], str] = {}
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, api)) for api in (True, False)]
        for server in self._servers:
            server.daemon_threads = True
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        self._threads: list[threading.Thread] = []

    def start(self) -> HubServer:
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----- helpers for tests -----

    def commits(self, repo_id: str, rev: str = "main") -> list[str]:
        """Commit shas from `rev` back to the first commit."""
        with self.store.lock:
            repo = self.store.repos[repo_id]
            commit, shas = repo.resolve(rev), []
            while commit is not None:
                shas.append(commit.sha)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return shas

    def file_bytes(self, repo_id: str, path: str, rev: str = "main") -> bytes:
        with self.store.lock:
            entry = self.store.repos[repo_id].resolve(rev).files[path]
        return self.store.read_object(entry.etag)

    def put_file(self, repo_id: str, path: str, data: bytes, message: str = "direct write") -> str:
        """Commit `data` at `path` on main directly (to plant broken files); returns the commit sha."""
        with self.store.lock:
            repo = self.store.repos[repo_id]
            head = repo.resolve("main")
            sha256 = hashlib.sha256(data).hexdigest() if is_lfs(path, len(data), data[:512]) else None
            if sha256:
                self.store.put_object(sha256, data)
                entry = FileEntry(git_blob_sha1(lfs_pointer(sha256, len(data))), len(data), sha256)
            else:
                self.store.put_object(git_blob_sha1(data), data)
                entry = FileEntry(git_blob_sha1(data), len(data))
            commit = self.store.new_commit(repo, head, message, "", {**head.files, path: entry})
            repo.branches["main"] = commit.sha
            return commit.sha

    def delete_file(self, repo_id: str, path: str) -> str:
        with self.store.lock:
            repo = self.store.repos[repo_id]
            head = repo.resolve("main")
            files = {p: e for p, e in head.files.items() if p != path}
            commit = self.store.new_commit(repo, head, f"Delete {path}", "", files)
            repo.branches["main"] = commit.sha
            return commit.sha


def _handler(hub: HubServer, api: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler if api else _CdnHandler):
        pass

    Handler.hub = hub
    return Handler


class _BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, format, *args):  # quiet
        pass

    @property
    def store(self) -> HubStore:
        return self.hub.store

    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, status: int, payload=None, headers: dict | None = None, content_type: str = "application/json"):
        data = payload if isinstance(payload, bytes) else b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error_answer(self, err: HubError) -> None:
        headers = {"X-Error-Message": str(err), **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self.send(err.status, {"error": str(err)}, headers)

    def dispatch(self) -> None:
        self.hub.requests.append((self.command, self.path))
        try:
            self.route()
        except HubError as err:
            self.send_error_answer(err)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = dispatch

    def route(self) -> None:
        raise NotImplementedError

    def serve_bytes(self, data: bytes, headers: dict) -> None:
        """200 with the whole content, or 206 for a `Range: bytes=a-[b]` request."""
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start, end = int(match.group(1)), int(match.group(2) or len(data) - 1)
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
            self.send(206, data[start:end + 1], headers, "application/octet-stream")
        else:
            self.send(200, data, headers, "application/octet-stream")


class _CdnHandler(_BaseHandler):
    """LFS storage origin: `PUT /upload/{oid}` and `GET|HEAD /objects/{oid}?repo=..&path=..`."""

    def route(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if self.command == "PUT" and len(parts) == 2 and parts[0] == "upload":
            data = self.body()
            if hashlib.sha256(data).hexdigest() != parts[1]:
                raise HubError(400, f"content does not hash to {parts[1]}")
            self.store.put_object(parts[1], data)
            return self.send(200, b"", {"ETag": f'"{parts[1]}"'})
        if self.command in ("GET", "HEAD") and len(parts) == 2 and parts[0] == "objects":
            if not self.store.has_object(parts[1]):
                raise HubError(404, "no such object")
            data = self.store.read_object(parts[1])
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            fault = self.hub.faults.get((query.get("repo"), query.get("path")))
            if fault == "truncate":
                data = data[: len(data) // 2]
            elif fault == "corrupt":
                data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
            return self.serve_bytes(data, {"ETag": f'"{parts[1]}"'})
        raise HubError(404, f"no route {self.command} {url.path}")


class _HubHandler(_BaseHandler):
    """The Hub API and the resolve endpoint."""

    def user(self, required: bool = False) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            if required:
                raise HubError(401, "You must be authenticated to do this")
            return None
        if auth != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return USER

    def check_write(self, repo_id: str) -> None:
        self.user(required=True)
        if repo_id.split("/")[0] not in (USER, *ORGS):
            raise HubError(403, f"You don't have the rights to create a model under the namespace {repo_id!r}")

    def route(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        method = self.command
        if parts[:1] == ["api"]:
            return self.route_api(method, parts[1:])
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self.resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        if len(parts) >= 6 and parts[1].endswith(".git") and parts[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{parts[0]}/{parts[1][:-4]}"
            return self.lfs_batch(repo_id) if parts[5] == "batch" else self.lfs_verify()
        raise HubError(404, f"no route {method} {url.path}")

    def route_api(self, method: str, parts: list[str]) -> None:
        if parts == ["whoami-v2"]:
            self.user(required=True)
            return self.send(200, {"type": "user", "name": USER, "fullname": "Test User",
                                   "orgs": [{"name": o, "type": "org"} for o in ORGS],
                                   "auth": {"type": "access_token",
                                            "accessToken": {"displayName": "tests", "role": "write"}}})
        if parts == ["repos", "create"] and method == "POST":
            return self.create_repo(json.loads(self.body() or b"{}"))
        if parts == ["repos", "delete"] and method == "DELETE":
            return self.delete_repo(json.loads(self.body() or b"{}"))
        if parts == ["validate-yaml"] and method == "POST":
            return self.validate_yaml(json.loads(self.body() or b"{}"))
        if len(parts) < 3 or parts[0] != "models":
            raise HubError(404, f"no route {method} /api/{'/'.join(parts)}")
        repo_id, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        if method == "GET" and not rest:
            return self.model_info(repo_id, "main")
        action, args = rest[0], rest[1:]
        handlers = {
            ("GET", "revision"): lambda: self.model_info(repo_id, args[0]),
            ("GET", "tree"): lambda: self.tree(repo_id, args[0], "/".join(args[1:])),
            ("POST", "paths-info"): lambda: self.paths_info(repo_id, args[0]),
            ("POST", "preupload"): lambda: self.preupload(repo_id, args[0]),
            ("POST", "commit"): lambda: self.commit(repo_id, args[0]),
            ("GET", "refs"): lambda: self.refs(repo_id),
            ("GET", "commits"): lambda: self.list_commits(repo_id, args[0] if args else "main"),
            ("POST", "branch"): lambda: self.create_branch(repo_id, "/".join(args)),
            ("DELETE", "branch"): lambda: self.delete_ref(repo_id, "branches", "/".join(args)),
            ("POST", "tag"): lambda: self.create_tag(repo_id, args[0]),
            ("DELETE", "tag"): lambda: self.delete_ref(repo_id, "tags", "/".join(args)),
        }
        if (method, action) not in handlers or (action not in ("refs", "commits") and not args):
            raise HubError(404, f"no route {method} /api/{'/'.join(parts)}")
        return handlers[(method, action)]()

    # ----- repos -----

    def create_repo(self, payload: dict) -> None:
        if payload.get("type", "model") != "model":
            raise HubError(400, f"this test Hub stores model repos only, not {payload.get('type')!r}")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        self.check_write(repo_id)
        url = f"{self.hub.url}/{repo_id}"
        with self.store.lock:
            if repo_id in self.store.repos:
                return self.send(409, {"error": "You already created this model repo", "url": url},
                                 {"X-Error-Message": "You already created this model repo"})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self.store.create_repo(repo_id, private)
        self.send(200, {"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, payload: dict) -> None:
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        self.check_write(repo_id)
        with self.store.lock:
            self.store.repo(repo_id, USER)
            del self.store.repos[repo_id]
        self.send(200, {})

    def validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        if content.startswith("---") and not re.search(r"\n---\s*(\n|$)", content[3:]):
            return self.send(400, {"errors": [{"message": "YAML metadata block is not closed by '---'"}]})
        self.send(200, {"errors": [], "warnings": []})

    def model_info(self, repo_id: str, rev: str) -> None:
        with self.store.lock:
            repo = self.store.repo(repo_id, self.user())
            commit = self.store.commit_at(repo, rev)
            blobs = "blobs" in self.query
            siblings = [{"rfilename": p, **(self.file_json(p, e) if blobs else {})}
                        for p, e in sorted(commit.files.items())]
            self.send(200, {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                            "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit.sha,
                            "lastModified": commit.date, "createdAt": commit.date, "private": repo.private,
                            "disabled": False, "gated": False, "tags": [], "siblings": siblings,
                            "usedStorage": sum(e.size for e in commit.files.values())})

    def file_json(self, path: str, entry: FileEntry) -> dict:
        info = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path, "blobId": entry.oid}
        if entry.sha256:
            info["lfs"] = {"oid": entry.sha256, "sha256": entry.sha256, "size": entry.size,
                           "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        return info

    def tree(self, repo_id: str, rev: str, path: str) -> None:
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        with self.store.lock:
            commit = self.store.commit_at(self.store.repo(repo_id, self.user()), rev)
            files = {p: e for p, e in commit.files.items() if p.startswith(prefix)}
        if prefix and not files:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        entries, folders = [], set()
        for p, entry in sorted(files.items()):
            rel = p[len(prefix):]
            if "/" in rel and not recursive:
                folders.add(prefix + rel.split("/")[0])
                continue
            if recursive:
                folders.update(prefix + "/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 1))
            entries.append(self.file_json(p, entry))
        dirs = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                for f in sorted(folders)]
        self.send(200, dirs + entries)

    def paths_info(self, repo_id: str, rev: str) -> None:
        body = self.body().decode()
        form = parse_qs(body) if "application/x-www-form-urlencoded" in self.headers.get("Content-Type", "") \
            else json.loads(body or "{}")
        paths = form.get("paths", [])
        with self.store.lock:
            commit = self.store.commit_at(self.store.repo(repo_id, self.user()), rev)
            found = [self.file_json(p, commit.files[p]) for p in paths if p in commit.files]
            folders = [{"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
                       for p in paths if p not in commit.files and any(f.startswith(p + "/") for f in commit.files)]
        self.send(200, found + folders)

    # ----- uploads -----

    def writable_commit(self, repo_id: str, rev: str) -> tuple[Repo, Commit]:
        self.check_write(repo_id)
        repo = self.store.repo(repo_id, USER)
        if rev not in repo.branches:
            if repo.resolve(rev) is not None:
                raise HubError(400, f"Invalid rev id: {rev} is not a branch")
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo, repo.commits[repo.branches[rev]]

    def preupload(self, repo_id: str, rev: str) -> None:
        payload = json.loads(self.body())
        with self.store.lock:
            _, head = self.writable_commit(repo_id, rev)
            files = []
            for f in payload["files"]:
                lfs = is_lfs(f["path"], f["size"], base64.b64decode(f.get("sample", "")))
                existing = head.files.get(f["path"])
                oid = None if existing is None else existing.sha256 if lfs else existing.oid
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                              "oid": oid})
        self.send(200, {"files": files, "commitOid": head.sha})

    def lfs_batch(self, repo_id: str) -> None:
        payload = json.loads(self.body())
        with self.store.lock:
            self.check_write(repo_id)
            self.store.repo(repo_id, USER)
        objects = []
        for obj in payload.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not self.store.has_object(obj["oid"]):
                entry["authenticated"] = True
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.cdn_url}/upload/{obj['oid']}"},
                    "verify": {"href": f"{self.hub.url}/{repo_id}.git/info/lfs/objects/verify"},
                }
            objects.append(entry)
        self.send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                  content_type="application/vnd.git-lfs+json")

    def lfs_verify(self) -> None:
        payload = json.loads(self.body())
        key = payload["oid"]
        if not self.store.has_object(key) or len(self.store.read_object(key)) != payload["size"]:
            raise HubError(422, f"LFS object {key} of size {payload['size']} was not uploaded")
        self.send(200, {"message": "ok"})

    def commit(self, repo_id: str, rev: str) -> None:
        if "create_pr" in self.query:
            raise HubError(400, "this test Hub does not implement pull requests")
        lines = [json.loads(line) for line in self.body().splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        with self.store.lock:
            repo, head = self.writable_commit(repo_id, rev)
            if header.get("parentCommit") not in (None, head.sha):
                raise HubError(412, f"A commit has happened since {header['parentCommit']}: head is {head.sha}")
            files = dict(head.files)
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    self.store.put_object(git_blob_sha1(data), data)
                    files[value["path"]] = FileEntry(git_blob_sha1(data), len(data))
                elif key == "lfsFile":
                    oid, size = value["oid"], value.get("size")
                    if not self.store.has_object(oid):
                        raise HubError(422, f"LFS object {oid} for {value['path']} was never uploaded")
                    size = size if size is not None else len(self.store.read_object(oid))
                    files[value["path"]] = FileEntry(git_blob_sha1(lfs_pointer(oid, size)), size, oid)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: e for p, e in files.items() if not p.startswith(prefix)}
                elif key != "header":
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit = self.store.new_commit(repo, head, header.get("summary") or "Upload files",
                                           header.get("description") or "", files)
            repo.branches[rev] = commit.sha
        self.send(200, {"success": True, "commitOid": commit.sha, "commitUrl": f"{self.hub.url}/{repo_id}/commit/"
                        f"{commit.sha}", "hookOutput": "", "pullRequestUrl": None})

    # ----- refs -----

    def refs(self, repo_id: str) -> None:
        with self.store.lock:
            repo = self.store.repo(repo_id, self.user())
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()]
            tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()]
        self.send(200, {"branches": branches, "converts": [], "tags": tags, "pullRequests": []})

    def list_commits(self, repo_id: str, rev: str) -> None:
        with self.store.lock:
            repo = self.store.repo(repo_id, self.user())
            commit, items = self.store.commit_at(repo, rev), []
            while commit is not None:
                items.append({"id": commit.sha, "title": commit.title, "message": commit.message,
                              "authors": [{"user": USER, "avatar": ""}], "date": commit.date})
                commit = repo.commits.get(commit.parent) if commit.parent else None
        self.send(200, items)

    def create_branch(self, repo_id: str, branch: str) -> None:
        payload = json.loads(self.body() or b"{}")
        with self.store.lock:
            self.check_write(repo_id)
            repo = self.store.repo(repo_id, USER)
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            repo.branches[branch] = self.store.commit_at(repo, payload.get("startingPoint") or "main").sha
        self.send(200, {})

    def create_tag(self, repo_id: str, rev: str) -> None:
        payload = json.loads(self.body() or b"{}")
        with self.store.lock:
            self.check_write(repo_id)
            repo = self.store.repo(repo_id, USER)
            if payload["tag"] in repo.tags:
                raise HubError(409, f"Tag {payload['tag']} already exists")
            repo.tags[payload["tag"]] = self.store.commit_at(repo, rev).sha
        self.send(200, {})

    def delete_ref(self, repo_id: str, kind: str, name: str) -> None:
        with self.store.lock:
            self.check_write(repo_id)
            refs = getattr(self.store.repo(repo_id, USER), kind)
            if refs.pop(name, None) is None:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
        self.send(200, {})

    # ----- downloads -----

    def resolve(self, repo_id: str, rev: str, path: str) -> None:
        with self.store.lock:
            repo = self.store.repo(repo_id, self.user())
            commit = self.store.commit_at(repo, rev)
            entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.oid}"', "Accept-Ranges": "bytes"}
        if entry.sha256 is None:
            return self.serve_bytes(self.store.read_object(entry.oid), headers)
        location = f"{self.hub.cdn_url}/objects/{entry.sha256}?repo={quote(repo_id)}&path={quote(path)}"
        self.send(302, b"", {**headers, "Location": location, "X-Linked-Etag": f'"{entry.sha256}"',
                             "X-Linked-Size": entry.size})





def client_environment(url: str, token: str, cache_dir: str | os.PathLike, offline: bool = False) -> dict[str, str]:
    """The environment variables that point a `huggingface_hub` started after them (a subprocess) at `url`."""
    return {"HF_ENDPOINT": url, "HF_TOKEN": token, "HF_HUB_DISABLE_XET": "1", "HF_HUB_CACHE": str(cache_dir),
            "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def client_settings(url: str, token: str, cache_dir: str | os.PathLike, offline: bool = False):
    """`(environment, attributes)` that point an already-imported `huggingface_hub` (and transformers) at `url`.

    The library reads HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE and HF_HUB_DISABLE_XET into `constants` at import
    time, so in-process the constants must be set too: `attributes` are `(object, name, value)` triples to apply with
    `monkeypatch.setattr` (tests) or `setattr` (scripts); `environment` is for `os.environ` (and subprocesses).
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api
    import transformers.utils.hub as transformers_hub

    environment = client_environment(url, token, cache_dir, offline=offline)
    attributes = [
        (constants, "ENDPOINT", url),
        (constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"),
        (constants, "HF_HUB_OFFLINE", offline),
        (constants, "HF_HUB_DISABLE_XET", True),
        (constants, "HF_HUB_CACHE", str(cache_dir)),
        (hf_api.api, "endpoint", url),
        (transformers_hub, "_hf_api", None),  # transformers' shared HfApi was built with the import-time endpoint
    ]
    return environment, attributes


def use_hub(monkeypatch, url: str, token: str, cache_dir: str | os.PathLike, offline: bool = False) -> None:
    """Point this process's `huggingface_hub` (and transformers) at `url` through pytest's `monkeypatch`, which
    undoes it after the test: `client_settings` applied with `setenv` / `setattr`."""
    environment, attributes = client_settings(url, token, cache_dir, offline=offline)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    for obj, name, value in attributes:
        monkeypatch.setattr(obj, name, value)


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted, after printing the environment that points `huggingface_hub` at this server."""
    import argparse

    parser = argparse.ArgumentParser(description="A local Hugging Face Hub on 127.0.0.1, for offline Hub workflows.")
    parser.add_argument("--root", default=None, help="Directory for the stored objects (default: a temporary one).")
    parser.add_argument("--token", default=TOKEN, help="The one valid access token.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, HubServer(args.root or Path(tmp, "hub"), token=args.token) as hub:
        environment = client_environment(hub.url, hub.token, Path(args.root or tmp, "hf_cache"))
        print("export " + " ".join(f"{k}={v}" for k, v in environment.items()), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


__all__ = ["HubServer", "HubStore", "client_environment", "client_settings", "git_blob_sha1", "TOKEN", "USER", "ORGS"]

