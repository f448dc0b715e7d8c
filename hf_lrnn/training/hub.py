"""Push a saved H-LRU / BD-LRU model folder to the Hugging Face Hub.

    from hf_lrnn.training.hub import push_to_hub
    url = push_to_hub("runs/sc-bdlru4", "my-org/bdlru-selective-copying", private=True)

The folder is what `save_pretrained` (+ a tokenizer's `save_pretrained`, + `write_model_card`) wrote: weights,
config.json with the full auto_map, the flat modeling .py files (so the repo loads with
trust_remote_code=True), tokenizer files, metrics files and README.md. Everything in it except training
checkpoints and caches (`files_to_upload`) is uploaded in ONE commit (`HfApi.create_commit`), so the repo never
shows half a model: a push either lands completely or not at all, and a failed push can simply be repeated.
(`HfApi.upload_folder` of recent huggingface_hub releases may split a folder into several commits.) The
local folder is only read, never changed. Failures raise `HubPushError`, whose message says what failed
and the command that retries the push.
"""

import os
import re
import shlex

from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

DEFAULT_COMMIT_MESSAGE = "Upload hf_lrnn model"
# never uploaded: accelerate training states (large, and useless without the training script), caches
SKIPPED_DIRS = (".git", ".cache", "__pycache__")
TOP_LEVEL_SKIPPED_DIRS = ("checkpoints",)
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
REPO_ID_PATTERN = re.compile(f"{_REPO_PART}/{_REPO_PART}")


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message says what failed and how to retry."""


class InvalidRepoIdError(HubPushError, ValueError):
    """`repo_id` is not of the form ORG/NAME (also a ValueError)."""


def _transport_errors() -> tuple:
    """Connection-level exception classes of the HTTP client huggingface_hub uses (httpx or httpx2)."""
    errors = [ConnectionError]
    for module_name in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module_name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def validate_repo_id(repo_id) -> str:
    """Return `repo_id` if it is "ORG/NAME" as the Hub accepts it, else raise InvalidRepoIdError (a ValueError)."""
    if not isinstance(repo_id, str) or not REPO_ID_PATTERN.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise InvalidRepoIdError(
            f"repo_id must be of the form 'ORG/NAME' (letters, digits, '-', '_', '.'; each part at most 96 "
            f"characters, no '--' or '..'), got repo_id={repo_id!r}"
        )
    return repo_id


def files_to_upload(folder) -> list:
    """Paths (relative, '/'-separated, sorted) of the files `push_to_hub` uploads from `folder`: all of them except
    the top-level checkpoints/ folder, unfinished `*.partial` folders, .git/.cache/__pycache__ and *.pyc files."""
    folder = os.fspath(folder)
    paths = []
    for root, dirs, files in os.walk(folder):
        relative = os.path.relpath(root, folder)
        dirs[:] = [d for d in dirs if not (d in SKIPPED_DIRS or d.endswith(".partial")
                                           or (relative == "." and d in TOP_LEVEL_SKIPPED_DIRS))]
        for name in files:
            if not name.endswith(".pyc"):
                paths.append(os.path.normpath(os.path.join(relative, name)).replace(os.sep, "/"))
    return sorted(paths)


def retry_command(folder, repo_id, *, private=False, revision=None, commit_message=None, token_given=False) -> str:
    """The `scripts/push_to_hub.py` command line that repeats a push (a token only as the placeholder YOUR_TOKEN)."""
    parts = ["python", "scripts/push_to_hub.py", str(folder), str(repo_id)]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", revision]
    if commit_message and commit_message != DEFAULT_COMMIT_MESSAGE:
        parts += ["--commit_message", commit_message]
    command = " ".join(shlex.quote(p) for p in parts)
    return command + (" --token YOUR_TOKEN" if token_given else "")


def _request_url(err: Exception):
    """The URL of the failed request, if the exception carries it."""
    for holder in (getattr(err, "response", None), err):
        try:
            return str(holder.request.url)
        except Exception:  # httpx raises RuntimeError when an error carries no request
            pass
    return None


def _explain(err: Exception, step: str, endpoint: str) -> str:
    """One sentence on what went wrong in `step`, from a huggingface_hub / HTTP client exception."""
    if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        status = err.response.status_code
        url = _request_url(err) or endpoint
        server_message = getattr(err, "server_message", None) or ""
        detail = f" ({server_message.strip()})" if server_message.strip() else ""
        if status in (401, 403):
            return (f"authentication failed while trying to {step}: {url} answered HTTP {status}{detail}. The token "
                    f"is missing, invalid or lacks write access: pass a write token with --token or set HF_TOKEN.")
        if status >= 500:
            return (f"the Hub had a server error while trying to {step}: {url} answered HTTP {status}{detail}. "
                    f"A commit is all-or-nothing, so the repo holds no partial upload; retry the push.")
        return f"the Hub refused to {step}: {url} answered HTTP {status}{detail}."
    if isinstance(err, _transport_errors()):
        url = _request_url(err) or endpoint
        return (f"could not reach the Hub at {endpoint} while trying to {step} ({type(err).__name__} on {url}: "
                f"{err}). Check the network and the HF_ENDPOINT setting.")
    return f"failed to {step}: {type(err).__name__}: {err}"


def push_to_hub(
    folder,
    repo_id: str,
    *,
    private: bool = False,
    revision: str = None,
    token: str = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    endpoint: str = None,
) -> str:
    """Upload the saved model `folder` (the files of `files_to_upload`) to the model repo `repo_id` ("ORG/NAME") in
    one commit; return the repo's URL (of the branch if `revision` is given).

    Creates the repo if needed (private if `private`, else with the owner's default visibility; an existing repo
    keeps its visibility), and the branch `revision` from main if given and missing. `token` defaults to HF_TOKEN
    or the stored login; `endpoint` to HF_ENDPOINT (read at call time) or huggingface.co. The folder is only read.
    Raises InvalidRepoIdError (a HubPushError and a ValueError) for a malformed repo id, HubPushError for a
    missing or empty folder or any failure on the way (message: what failed + the retry command).
    """
    folder = os.fspath(folder)
    try:
        validate_repo_id(repo_id)
    except InvalidRepoIdError as err:
        example = retry_command(folder, "ORG/NAME", private=private, revision=revision, commit_message=commit_message,
                                token_given=token is not None)
        raise InvalidRepoIdError(f"{err}. Nothing was pushed; retry with a valid id:\n    {example}") from None
    paths = files_to_upload(folder) if os.path.isdir(folder) else []
    if not paths:
        raise HubPushError(f"folder={folder!r} is not a folder or holds no files to push")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    retry = retry_command(folder, repo_id, private=private, revision=revision, commit_message=commit_message,
                          token_given=token is not None)

    step = f"create the repository {repo_id}"
    try:
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)  # None: the owner's default
        if revision:
            step = f"create the branch {revision!r} of {repo_id}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = f"upload {folder} to {repo_id}" + (f" (branch {revision!r})" if revision else "")
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=os.path.join(folder, p)) for p in paths]
        api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    except Exception as err:  # every failure becomes one HubPushError with the retry command
        raise HubPushError(
            f"Push of {folder} to {repo_id} failed: {_explain(err, step, endpoint)}\n"
            f"The local folder was not changed. Retry with:\n    {retry}"
        ) from err
    return f"{endpoint}/{repo_id}" + (f"/tree/{revision}" if revision else "")
