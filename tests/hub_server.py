"""A small in-memory Hugging Face Hub for the tests: just enough of the HTTP API for `huggingface_hub` and
`transformers` to create repos, push commits and download files (no LFS, no Xet, no git).

    server = HubServer(tokens={"hf_write"})   # listens on 127.0.0.1, a free port
    server.start()
    api = HfApi(endpoint=server.url, token="hf_write")
    ...
    server.stop()

Model repos only (routes in ROUTES): create repo (409 with the repo's `url` if it exists), preupload (every
file "regular"), commit (NDJSON; base64 files, deletions), create branch, repo info (+ /revision/R), tree, refs,
HEAD/GET resolve (X-Repo-Commit, ETag; 404 + X-Error-Code EntryNotFound / RevisionNotFound / RepoNotFound),
validate-yaml. Each repo has branches (name -> commit sha) and commits (sha -> {path: bytes}); a commit copies
its branch's files, applies the operations and moves the branch. Writes need a token from `server.tokens`,
reads of a private repo too (401 otherwise); an unknown token is refused everywhere. Fault injection: set
`server.fail_next_commit` to an HTTP status and the next commit request answers that status (after reading
the upload) and changes nothing. Unknown routes answer 404 and are recorded in `server.unknown_requests`.
"""

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
ROUTES = [  # (method, pattern, handler name); {id} is "namespace/name"
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", r"/api/models/(?P<id>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", r"/api/models/(?P<id>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", r"/api/models/(?P<id>[^/]+/[^/]+)/branch/(?P<rev>[^/]+)", "create_branch"),
    ("GET", r"/api/models/(?P<id>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", "model_info"),
    ("GET", r"/api/models/(?P<id>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("GET", r"/api/models/(?P<id>[^/]+/[^/]+)/refs", "refs"),
    ("GET", r"/(?P<id>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("HEAD", r"/(?P<id>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]


def git_blob_sha(content: bytes) -> str:
    """The git object id of a file (what the Hub reports as `oid` / ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict = field(default_factory=dict)  # branch name -> commit sha
    commits: dict = field(default_factory=dict)  # commit sha -> {path: bytes}
    messages: dict = field(default_factory=dict)  # commit sha -> commit summary

    def resolve(self, revision: str):
        """Commit sha of a branch name or a full sha, else None."""
        return self.branches.get(revision) or (revision if revision in self.commits else None)

    def files(self, branch: str = "main") -> dict:
        """{path: bytes} at the head of `branch`."""
        return self.commits[self.branches[branch]]


class HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str = None, extra: dict = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.extra = status, message, error_code, extra or {}


class HubServer:
    """The server state and its thread. `url` is the endpoint to give huggingface_hub (HF_ENDPOINT)."""

    def __init__(self, tokens=("hf_test_token",)):
        self.tokens = set(tokens)
        self.repos = {}  # repo id -> Repo
        self.fail_next_commit = None  # an HTTP status: the next commit answers it and changes nothing
        self.requests = []  # (method, path, status) of every request
        self.unknown_requests = []  # (method, path) answered 404 because no route matched
        self.lock = threading.Lock()
        self.httpd = None
        self.thread = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.httpd = None

    # ---- helpers ----
    def _new_commit(self, repo: Repo, files: dict, message: str) -> str:
        sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
        repo.commits[sha] = files
        repo.messages[sha] = message
        return sha

    def _repo(self, repo_id: str, token, write: bool) -> Repo:
        if token is not None and token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        if write and token is None:
            raise HubError(401, "You must be authenticated to access this resource")
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and token is None):
            raise HubError(404 if token else 401, "Repository not found", "RepoNotFound")
        return repo

    def _revision(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    # ---- handlers: (request, match, token, base url) -> (status, headers, body: dict | list | bytes) ----
    def create_repo(self, request, match, token, base):
        if token is None or token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        payload = request.json()
        if payload.get("type", "model") != "model":
            raise HubError(400, "this test server hosts model repos only")
        namespace, name = payload.get("organization") or "user", payload.get("name", "")
        repo_id = f"{namespace}/{name}"
        if not re.fullmatch(f"{REPO_PART}/{REPO_PART}", repo_id):
            raise HubError(400, f"Invalid repo name: {repo_id}")
        url = f"{base}/{repo_id}"
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo", extra={"url": url})
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        repo = self.repos[repo_id] = Repo(private=private)
        repo.branches["main"] = self._new_commit(repo, {}, "initial commit")
        return 200, {}, {"url": url, "name": repo_id, "id": repo_id}

    def validate_yaml(self, request, match, token, base):
        request.json()
        return 200, {}, {"errors": [], "warnings": []}

    def preupload(self, request, match, token, base):
        repo = self._repo(match["id"], token, write=True)
        self._revision(repo, match["rev"])
        files = request.json().get("files", [])
        answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
        return 200, {}, {"files": answer, "commitOid": repo.resolve(match["rev"])}

    def create_branch(self, request, match, token, base):
        repo = self._repo(match["id"], token, write=True)
        start = request.json().get("startingPoint") or "main"
        if match["rev"] in repo.branches:
            raise HubError(409, f"Branch {match['rev']} already exists")
        repo.branches[match["rev"]] = self._revision(repo, start)
        return 200, {}, {}

    def commit(self, request, match, token, base):
        repo = self._repo(match["id"], token, write=True)
        lines = [json.loads(line) for line in request.body().splitlines() if line.strip()]
        if self.fail_next_commit is not None:
            status, self.fail_next_commit = self.fail_next_commit, None
            raise HubError(status, "Internal Error - We're working hard to fix this as soon as possible!")
        revision = match["rev"]
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = dict(repo.files(revision))
        message = ""
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                message = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[revision]:
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"this test server does not support {key!r} operations (only regular files)")
        sha = repo.branches[revision] = self._new_commit(repo, files, message)
        return 200, {}, {"success": True, "commitOid": sha, "commitUrl": f"{base}/{match['id']}/commit/{sha}",
                         "pullRequestUrl": None}

    def model_info(self, request, match, token, base):
        repo = self._repo(match["id"], token, write=False)
        sha = self._revision(repo, match["rev"] or "main")
        siblings = [{"rfilename": path} for path in sorted(repo.commits[sha])]
        return 200, {}, {"id": match["id"], "modelId": match["id"], "sha": sha, "private": repo.private,
                         "siblings": siblings, "tags": [], "downloads": 0, "likes": 0}

    def tree(self, request, match, token, base):
        repo = self._repo(match["id"], token, write=False)
        files = repo.commits[self._revision(repo, match["rev"])]
        prefix = (match["path"] or "").strip("/")
        recursive = request.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, folders = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            if "/" in rest and not recursive:
                folders.add(((prefix + "/") if prefix else "") + rest.split("/")[0])
                continue
            entries.append({"type": "file", "path": path, "size": len(files[path]), "oid": git_blob_sha(files[path])})
        entries += [{"type": "directory", "path": f, "size": 0, "oid": git_blob_sha(f.encode())}
                    for f in sorted(folders)]
        if prefix and not entries:
            raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
        return 200, {}, entries

    def refs(self, request, match, token, base):
        repo = self._repo(match["id"], token, write=False)
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.branches.items()]
        return 200, {}, {"branches": branches, "tags": [], "converts": []}

    def resolve(self, request, match, token, base):
        repo = self._repo(match["id"], token, write=False)
        sha = self._revision(repo, match["rev"])
        path = match["path"]
        if path not in repo.commits[sha]:
            raise HubError(404, "Entry not found", "EntryNotFound", extra={"commit": sha})
        content = repo.commits[sha][path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(content)}"',
                   "Content-Type": "application/octet-stream"}
        return 200, headers, content


def _handler_for(server: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # seconds an idle keep-alive connection is kept: no handler thread waits forever

        def log_message(self, *args):  # keep pytest output clean
            pass

        def body(self) -> bytes:
            if not hasattr(self, "_body"):
                self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return self._body

        def json(self):
            raw = self.body()
            return json.loads(raw) if raw else {}

        def _dispatch(self, method: str) -> None:
            self.__dict__.pop("_body", None)  # one handler serves every request of a keep-alive connection
            split = urlsplit(self.path)
            self.query = parse_qs(split.query)
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else None
            base = f"http://{self.headers.get('Host') or server.url[len('http://'):]}"
            status, headers, payload = 404, {}, {"error": "Not Found"}
            for route_method, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, split.path) if route_method == method else None
                if match:
                    groups = {k: (unquote(v) if v is not None else None) for k, v in match.groupdict().items()}
                    try:
                        with server.lock:
                            status, headers, payload = getattr(server, handler)(self, groups, token, base)
                    except HubError as err:
                        status, payload = err.status, {"error": err.message, **err.extra}
                        headers = {"X-Error-Message": err.message}
                        if err.error_code:
                            headers["X-Error-Code"] = err.error_code
                        if "commit" in err.extra:
                            headers["X-Repo-Commit"] = err.extra["commit"]
                    break
            else:
                server.unknown_requests.append((method, self.path))
            self.body()  # always consume the request body, so the connection can be reused
            server.requests.append((method, self.path, status))
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            if not isinstance(payload, bytes):
                self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_DELETE(self):
            self._dispatch("DELETE")

    return Handler
