"""docs/deploying.md, run: its `sh` blocks in order, as written, on an owner's stand-in machine.

`blocks()` reads the guide's fenced blocks: an ```sh block runs unless the line before it is
`<!-- not run: <reason> -->`; a shell block in another spelling (bash, shell, console) is an
error, so no command of the guide goes unrun without saying why.

`run_guide(checkout, operators, ...)` runs the runnable blocks in one bash (`set -euo
pipefail`) per environment, at the root of `checkout` (a git work tree with the repository's
`.venv`, the guide's prerequisite), with the operator's values in the variables the guide names
(ENV, P, GITLAB_PROJECT_ID, ANALYST_GROUP, NOTIFICATION_CHANNEL), `gcloud` and `pulumi` replaced
by tests/delivery/standins, and nothing else of the calling process's environment. It returns
the GitLab variables the guide printed per scope and where the stand-ins keep the "cloud" (the
buckets' stacks and outputs): the world the pipeline's jobs start from
(tests/delivery/pipeline_jobs.py).

What the guide runs against Google itself (`make preflight`, with the owner's ADC) reaches a fake
project (tests/delivery/owners_google.py) at Google's own addresses, through an HTTPS proxy
that terminates TLS for `*.googleapis.com` with a test CA the run trusts
(tests/delivery/google_front.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.delivery.google_front import google_front
from tests.delivery.owners_google import OWNER_ACCOUNT, Organisation, OwnersGoogle, owners_google

REPO = Path(__file__).resolve().parents[2]
GUIDE = Path("docs") / "deploying.md"
STANDINS = Path("tests") / "delivery" / "standins"
SKIP = re.compile(r"^<!-- not run: (?P<reason>\S.*\S) -->$")
FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_-]*)\s*$")
SHELLS = {"sh", "bash", "shell", "console", "zsh"}
VARIABLE_LINE = re.compile(r"^scope (?P<scope>[a-z]+): (?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
REFERENCE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Owner",
    "GIT_AUTHOR_EMAIL": OWNER_ACCOUNT,
    "GIT_COMMITTER_NAME": "Owner",
    "GIT_COMMITTER_EMAIL": OWNER_ACCOUNT,
}
# What `make setup` (the guide's prerequisite) installs from: the venv is current for these.
SETUP_INPUTS = ("requirements/dev.lock", "pyproject.toml")


class GuideError(Exception):
    """The guide cannot be run as written (a block, or a command in it)."""


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip_reason: str | None


@dataclass(frozen=True)
class Operator:
    """The values an owner supplies for one environment (docs/deploying.md step 0 says where)."""

    env: str
    project: str
    gitlab_project_id: str
    analyst_group: str
    notification_channel: str | None = None
    quota_project: str | None = None  # the owner's ADC quota project (not dev's or prod's)

    def environ(self) -> dict[str, str]:
        values = {
            "ENV": self.env,
            "P": self.project,
            "GITLAB_PROJECT_ID": self.gitlab_project_id,
            "ANALYST_GROUP": self.analyst_group,
        }
        if self.notification_channel:
            values["NOTIFICATION_CHANNEL"] = self.notification_channel
        if self.quota_project:
            values["QUOTA_PROJECT"] = self.quota_project
        return values


@dataclass
class GuideRun:
    checkout: Path
    state: Path  # $STANDIN_STATE: buckets and each backend's stacks
    log: Path  # $STANDIN_LOG
    home: Path  # the owner's $HOME (gcloud credentials, Pulumi's login)
    output: dict[str, str] = field(default_factory=dict)  # env -> what the guide printed
    variables: dict[str, dict[str, str]] = field(default_factory=dict)  # scope -> name -> value
    google: OwnersGoogle | None = None  # the fake Google the guide's own calls reached

    def cloud(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state.read_text())
        return data

    def stack(self, backend: str, project: str, stack: str) -> dict[str, Any]:
        """One stack as the stand-in backend `backend` (a gs:// URL) holds it."""
        found: dict[str, Any] = self.cloud()["backends"][backend]["stacks"][f"{project}/{stack}"]
        return found


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks of `markdown`, in order; GuideError on a shell block not in `sh`."""
    found: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        if end is None:
            raise GuideError(f"{GUIDE}:{i + 1}: the block never closes")
        lang = opening["lang"]
        previous = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = SKIP.match(previous)
        if lang in SHELLS - {"sh"} or (
            lang == "" and not marker and _looks_like_shell(lines[i + 1 : end])
        ):
            raise GuideError(
                f"{GUIDE}:{i + 1}: a shell block must be ```sh (run by the test) or follow "
                "`<!-- not run: <reason> -->`"
            )
        found.append(
            Block(i + 1, lang, "\n".join(lines[i + 1 : end]), marker["reason"] if marker else None)
        )
        i = end + 1
    return found


def _looks_like_shell(body: list[str]) -> bool:
    return any(re.match(r"^\s*(pulumi|gcloud|git|cd|export|make)\b", line) for line in body)


def runnable(markdown: str) -> list[Block]:
    return [b for b in blocks(markdown) if b.lang == "sh" and b.skip_reason is None]


def script(markdown: str) -> str:
    """The bash script the owner's terminal amounts to: every runnable block, in order."""
    parts = ["set -euo pipefail"]
    for block in runnable(markdown):
        parts.append(f"echo '::guide block at {GUIDE}:{block.line}' >&2")
        parts.append(block.text)
    return "\n".join(parts) + "\n"


def run_guide(
    checkout: Path,
    operators: list[Operator],
    base: Path,
    *,
    projects: list[str] | None = None,
    organisation: Organisation | None = None,
) -> GuideRun:
    """Run the guide in `checkout` once per operator (environment); GuideError if a command fails.

    `base` receives the stand-ins' state, log and the owner's home. `projects`: the GCP projects
    the owner may use (default: the operators' and their quota projects). `organisation`: the
    groups and channels that exist (default: the operators' own).
    """
    base.mkdir(parents=True, exist_ok=True)
    run = GuideRun(checkout, base / "cloud.json", base / "standins.jsonl", base / "owner-home")
    run.home.mkdir(exist_ok=True)
    state = json.loads(run.state.read_text()) if run.state.is_file() else {}
    owned = [o.project for o in operators] + [o.quota_project for o in operators if o.quota_project]
    state["projects"] = projects or list(dict.fromkeys(owned))
    run.state.write_text(json.dumps(state))
    venv = checkout / ".venv"
    linked = not venv.exists()
    if linked:  # the guide's prerequisite `make setup`, shared with this repository's
        venv.symlink_to(REPO / ".venv")
    google = owners_google(run.state, state["projects"], organisation or Organisation.of(operators))
    run.google = google
    server, url = google.start()
    try:
        _set_up(checkout)
        text = (checkout / GUIDE).read_text()
        with google_front(url, base / "google-front") as front:
            for operator in operators:
                run.output[operator.env] = _run_once(run, script(text), operator, front)
    finally:
        server.shutdown()
        server.server_close()
        if linked:
            venv.unlink()
    for env, out in run.output.items():
        for line in out.splitlines():
            found = VARIABLE_LINE.match(line)
            if found:
                if found["scope"] != env:
                    raise GuideError(f"the {env} run printed a variable of scope {found['scope']}")
                run.variables.setdefault(env, {})[found["name"]] = found["value"]
    return run


def _set_up(checkout: Path) -> None:
    """The prerequisite `make setup` is done, with the shared venv: the checkout's lock files are
    dated before its stamp, so a make target of the guide (`make preflight` depends on `setup`)
    does not reinstall the shared venv (copies and clones are newer files)."""
    stamp = checkout / ".venv" / ".installed"
    if (checkout / ".venv").resolve() != (REPO / ".venv").resolve() or not stamp.is_file():
        return
    before = stamp.stat().st_mtime_ns - 1_000_000_000
    for name in SETUP_INPUTS:
        if (checkout / name).stat().st_mtime_ns > before:
            os.utime(checkout / name, ns=(before, before))


def _run_once(
    run: GuideRun, body: str, operator: Operator, google: dict[str, str] | None = None
) -> str:
    standins = run.checkout / STANDINS
    env = {
        "PATH": f"{standins}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(run.home),
        "LANG": "C.UTF-8",
        "STANDIN_DIR": str(standins),
        "STANDIN_STATE": str(run.state),
        "STANDIN_LOG": str(run.log),
        "STANDIN_ACCOUNT": OWNER_ACCOUNT,
        **(google or {}),
        **GIT_IDENTITY,
        **operator.environ(),
    }
    done = subprocess.run(
        ["bash", "-c", body],
        cwd=run.checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        blocks_run = re.findall(r"::guide block at (\S+)", done.stderr)
        where = blocks_run[-1] if blocks_run else "before the first block"
        raise GuideError(
            f"ENV={operator.env}: the block at {where} failed (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def copy_checkout(destination: Path) -> Path:
    """A git work tree of this repository's files as they are now (committed or not), one commit."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    env = {**os.environ, **GIT_IDENTITY}
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the repository"]):
        subprocess.run(["git", *argv], cwd=destination, env=env, check=True)
    return destination


def pipeline_variables(repo: Path) -> set[str]:
    """The GCP_*/PULUMI_* variables the pipeline reads but does not define: the ones an owner sets.

    Read from what the jobs run, not from a comment: every `$NAME`/`${NAME}` in .gitlab-ci.yml's
    values and in scripts/, minus the names a `variables:` block of .gitlab-ci.yml or a deploy
    job's dotenv lines define.
    """
    config = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())
    defined: set[str] = set()
    used: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "variables" and isinstance(value, dict):
                    defined.update(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            used.update(REFERENCE.findall(node))

    walk(config)
    for script_file in sorted((repo / "scripts").iterdir()):
        if script_file.is_file():
            code = "\n".join(
                line
                for line in script_file.read_text().splitlines()
                if not line.lstrip().startswith("#")
            )
            used.update(REFERENCE.findall(code))
            # A deploy job's dotenv report (`echo "NAME=..."`) defines NAME for later jobs.
            defined.update(re.findall(r'^\s*echo "([A-Z][A-Z0-9_]*)=', code, re.M))
    return {name for name in used - defined if name.startswith(("GCP_", "PULUMI_"))}
