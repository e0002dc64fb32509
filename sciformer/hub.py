"""The Hugging Face Hub, in and out: every use of ``huggingface_hub`` in sciformer goes through here.

In: ``resolve("hf://org/name@revision")`` (or a bare ``org/name``) downloads the files a reader needs into the
Hub's own cache and returns the local snapshot directory. ``huggingface_hub`` does the work, so the cache is
shared with every other tool and the usual settings apply: ``HF_HOME`` / ``HF_HUB_CACHE`` (where),
``HF_HUB_OFFLINE=1`` (cache only, never the network), ``HF_TOKEN`` or ``hf auth login`` (private and gated
repos), revisions (a branch, a tag or a commit). The environment is read when a model is resolved, not when
``huggingface_hub`` was imported, so a notebook may set it late. Safetensors are preferred: a
``pytorch_model.bin`` is fetched only where a repo has no ``model.safetensors`` (its readers load it with
``weights_only=True``). Each way of failing is one ``CheckpointError`` that says what to do.

Out: ``push(folder, "org/name")`` creates the repo if needed and uploads an export folder in one commit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sciformer.errors import CheckpointError, SciformerError

PREFIX = "hf://"
SAFETENSORS, BIN = "model.safetensors", "pytorch_model.bin"
# org/name as the Hub spells repo ids (letters, digits, '-', '_', '.'), optionally @revision
_REPO = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[^@\s]+))?$")


class HubError(SciformerError):
    """Uploading to the Hub failed (no token, no permission, no network)."""


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub_ref(text: str | os.PathLike) -> bool:
    """``hf://org/name[@rev]`` (or ``hf:/``, as a Path writes it) always; a bare ``org/name[@rev]`` only when no
    such local path exists (a local directory always wins)."""
    s = str(text)
    if s.startswith("hf:/"):
        return True
    return not Path(s).exists() and not s.startswith((".", "/", "~")) and _REPO.match(s) is not None


def parse(text: str | os.PathLike) -> HubRef:
    s = str(text)
    body = s.split(":", 1)[1].lstrip("/") if s.startswith("hf:/") else s  # a Path turns "hf://" into "hf:/"
    m = _REPO.match(body.strip("/"))
    if m is None:
        raise CheckpointError(f"{s}: not a Hub model id; write hf://org/name or hf://org/name@revision "
                              "(a branch, tag or commit)")
    return HubRef(m["repo"], m["rev"])


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return constants.is_offline_mode() if value is None else value.strip().upper() in constants.ENV_VARS_TRUE_VALUES


def cache_dir() -> Path:
    """The Hub cache as the environment names it now: HF_HUB_CACHE, else HF_HOME/hub, else the library's."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    return Path(constants.HF_HUB_CACHE)


def _cached_revisions(ref: HubRef) -> list[str]:
    from huggingface_hub.file_download import repo_folder_name

    folder = cache_dir() / repo_folder_name(repo_id=ref.repo_id, repo_type="model")
    refs = sorted(p.name for p in (folder / "refs").glob("*") if p.is_file())
    snaps = sorted(p.name[:12] for p in (folder / "snapshots").glob("*") if p.is_dir())
    return refs + [s for s in snaps if s not in refs]


def _download(ref: HubRef, filename: str, *, offline: bool, token: str | bool | None) -> Path:
    """One file of the repo in the cache; the Hub's errors become one CheckpointError each."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    revision = ref.revision or "main"
    try:
        return Path(hf_hub_download(ref.repo_id, filename, revision=revision, cache_dir=cache_dir(),
                                    local_files_only=offline, token=token, library_name="sciformer"))
    except GatedRepoError:
        raise CheckpointError(f"{ref}: a gated repo; accept its conditions on huggingface.co, then log in "
                              "(`hf auth login`) or set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{ref}: the Hub has no revision {revision!r} of {ref.repo_id}; give an existing "
                              "branch, tag or commit after '@'") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{ref}: no such model repo on the Hub (or it is private: log in with "
                              "`hf auth login` or set HF_TOKEN)") from None
    except HFValidationError as e:
        raise CheckpointError(f"{ref}: not a valid Hub repo id ({str(e).splitlines()[0]})") from None
    except LocalEntryNotFoundError:  # offline, or the Hub unreachable: and not in the cache
        cached = _cached_revisions(ref)
        if not cached:
            why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
            raise CheckpointError(f"{ref}: not in the Hugging Face cache ({cache_dir()}) and {why}; download it "
                                  f"once with network access (`hf download {ref.repo_id}`), or point HF_HOME at "
                                  "a cache that holds it") from None
        if ref.revision and ref.revision not in cached and not any(ref.revision.startswith(c) for c in cached):
            raise CheckpointError(f"{ref}: revision {ref.revision!r} is not in the cache (cached: "
                                  f"{', '.join(cached)}) and the Hub cannot be asked (offline); use a cached "
                                  "revision or go online") from None
        raise _missing_file(ref, filename, cached_only=True) from None
    except EntryNotFoundError:  # RemoteEntryNotFoundError: the revision exists, the file does not
        raise _missing_file(ref, filename, cached_only=False) from None


class _MissingFile(CheckpointError):
    pass


def _missing_file(ref: HubRef, filename: str, cached_only: bool) -> _MissingFile:
    where = "its cached snapshot" if cached_only else "the repo"
    return _MissingFile(f"{ref}: {where} has no {filename}")


def resolve(ref: str | os.PathLike | HubRef, *, files: tuple[str, ...] = ("config.json",),
            weights: tuple[str, ...] = (SAFETENSORS,), token: str | bool | None = None,
            expected: str = "a sciformer export (config.json + model.safetensors)") -> Path:
    """The local snapshot directory of a Hub model with ``files`` and the first of ``weights`` it has.

    ``weights`` are tried in order (safetensors first), so a repo that has both never downloads the pickle.
    """
    ref = ref if isinstance(ref, HubRef) else parse(ref)
    offline = _offline()
    try:
        paths = [_download(ref, f, offline=offline, token=token) for f in files]
    except _MissingFile as e:
        raise CheckpointError(f"{e}; it is not {expected}") from None
    for name in weights:
        try:
            paths.append(_download(ref, name, offline=offline, token=token))
            break
        except _MissingFile:
            continue
    else:
        raise CheckpointError(f"{ref}: holds no {' or '.join(weights)}{' in the cache' if offline else ''}; it "
                              f"is not {expected}")
    return paths[0].parent


def push(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, revision: str | None = None,
         token: str | bool | None = None, commit_message: str | None = None) -> str:
    """Upload an export folder to ``repo_id`` (created if missing) in one commit; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

    folder = Path(folder)
    ref = parse(repo_id)
    if ref.revision and revision and ref.revision != revision:
        raise HubError(f"--push {repo_id}: two revisions given ({ref.revision!r}, {revision!r})")
    revision = revision or ref.revision
    if not (folder / "config.json").is_file():
        raise HubError(f"{folder}: no config.json; push an export folder written by `sciformer export`")
    api = HfApi(token=token)
    try:
        api.create_repo(ref.repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=ref.repo_id, folder_path=folder, repo_type="model", revision=revision,
                                 commit_message=commit_message or f"sciformer export of {folder.name}")
    except LocalTokenNotFoundError:
        raise HubError(f"--push {ref.repo_id}: no Hugging Face token; log in with `hf auth login` or set "
                       "HF_TOKEN") from None
    except HFValidationError as e:
        raise HubError(f"--push {ref.repo_id}: not a valid repo id ({str(e).splitlines()[0]})") from None
    except HfHubHTTPError as e:
        raise HubError(f"--push {ref.repo_id}: the Hub refused the upload ({' '.join(str(e).split())[:200]}); "
                       "check the token's write permission and the organisation name") from None
    except OSError as e:  # no network
        raise HubError(f"--push {ref.repo_id}: cannot reach the Hub ({type(e).__name__}: {str(e)[:160]}); the "
                       f"export stays in {folder}: push it later with `hf upload {ref.repo_id} {folder}`") from None
    return str(getattr(info, "commit_url", info))
