"""The tutorial, followed as a reader would: in a fresh directory, with a fresh virtual
environment, typing nothing but the tutorial's commands and saving nothing but its files.

The test reads docs/tutorial.md in order. "Save this as `NAME`" followed by a
``literalinclude`` writes that file; every ``$`` line of a ``console`` block runs in the
project directory; the lines after it are what the reader should see, and are checked. A
command whose expected output says "Running on" is a server: it starts in the background,
is waited for, and gets Ctrl+C (SIGINT) when the tutorial starts the next server or ends.
``. .venv/bin/activate`` is run for real, and the environment it leaves is kept.

The only things done outside the tutorial's words are its premise (a copy of the
repository next to the project, as ``../trio_bocaws``) and opening the chat page, which
the reader does in a browser and this test does with an HTTP GET.

It installs from PyPI (trio, hypercorn, pytest...), so it needs the package registry; it
takes about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
PORT = 8000  # the tutorial's own address: the reader types no port
COMMAND_TIMEOUT = 600  # pip installs from PyPI
SERVER_START_TIMEOUT = 30


@attrs.frozen
class SaveFile:
    name: str
    source: Path


@attrs.frozen
class Command:
    line: str
    expected: tuple[str, ...]


Step = SaveFile | Command


def tutorial_steps(text: str) -> Iterator[Step]:
    """The files to save and the commands to type, in the tutorial's order."""
    save_as: str | None = None
    paragraph = ""  # prose wraps: "save this as" may end one line, the name start the next
    lines = iter(text.splitlines())
    for line in lines:
        paragraph = f"{paragraph} {line}" if line.strip() else ""
        saved = re.search(r"[Ss]ave this as\s+`([^`]+)`", paragraph)
        if saved:
            save_as, paragraph = saved.group(1), ""
        elif line.startswith("```{literalinclude}"):
            path = line.split("}", 1)[1].strip()
            options = []
            for option in lines:
                if option.startswith("```"):
                    break
                options.append(option)
            partial = any(option.startswith(":pyobject:") for option in options)
            if save_as is not None and not partial:
                yield SaveFile(save_as, (TUTORIAL.parent / path).resolve())
                save_as = None
        elif line.startswith("```console"):
            block: list[str] = []
            for body in lines:
                if body.startswith("```"):
                    break
                block.append(body)
            command: str | None = None
            expected: list[str] = []
            for body in block:
                if body.startswith("$ "):
                    if command is not None:
                        yield Command(command, tuple(expected))
                    command, expected = body[2:], []
                elif body.strip():
                    expected.append(body)
            if command is not None:
                yield Command(command, tuple(expected))


def copy_of_repository(target: Path) -> None:
    """The tutorial's premise: the repository as it is in git, beside the project."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        source = ROOT / raw.decode()
        if source.is_file():
            destination = target / raw.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def shown(expected: str, output: str) -> bool:
    """Whether ``output`` shows the expected line: timings ("in 0.05s") and log prefixes
    ("[2026-01-05 10:00:00 +0000] [4242] [INFO] ") vary from run to run."""
    line = re.sub(r"^(\[[^\]]*\] )+", "", expected.strip())
    parts = re.split(r"(?<= in )[0-9.]+s\b", line)
    pattern = r"[0-9.]+s".join(re.escape(part) for part in parts)
    pattern = re.sub(r"(\\ )+", lambda _: r"\s+", pattern)
    return re.search(pattern, output) is not None


class Reader:
    """Types the tutorial's commands in one project directory."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("VIRTUAL_ENV", "PYTHON", "COV_", "COVERAGE", "PYTEST"))
        }
        # The reader's python: the interpreter running the tests, first on PATH.
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), self.env["PATH"]])
        self.env.pop("PYTHONPATH", None)
        self.server: subprocess.Popen[str] | None = None
        self.server_log: Path | None = None

    def save(self, step: SaveFile) -> None:
        shutil.copyfile(step.source, self.project / step.name)

    def type(self, step: Command) -> None:
        if step.line.startswith(". ") or step.line.startswith("source "):
            self.source(step.line)
        elif any("Running on" in line for line in step.expected):
            self.start_server(step)
        else:
            self.run(step)

    def source(self, line: str) -> None:
        # `. .venv/bin/activate` changes the shell it runs in: run it, keep what it set.
        dumped = subprocess.run(
            ["bash", "-c", f"{line} && env -0"],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            check=True,
            timeout=COMMAND_TIMEOUT,
        ).stdout
        self.env = dict(
            entry.decode().split("=", 1) for entry in dumped.split(b"\0") if b"=" in entry
        )

    def run(self, step: Command) -> None:
        done = subprocess.run(
            step.line,
            shell=True,
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"`{step.line}` failed ({done.returncode}):\n{output}"
        for line in step.expected:
            assert shown(line, output), f"`{step.line}` did not show {line!r}:\n{output}"

    def start_server(self, step: Command) -> None:
        self.stop_server()
        with socket.socket() as probe:
            # The tutorial's port: a server left over from elsewhere would answer instead.
            assert probe.connect_ex(("127.0.0.1", PORT)) != 0, f"port {PORT} is already in use"
        self.server_log = self.project / f"server-{len(step.line)}.log"
        log = self.server_log.open("w")
        self.server = subprocess.Popen(
            # exec: Ctrl+C reaches the command alone, as in a terminal, not a shell around it
            f"exec {step.line}",
            shell=True,
            cwd=self.project,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        log.close()
        for _ in range(SERVER_START_TIMEOUT * 10):
            output = self.server_log.read_text()
            if all(shown(line, output) for line in step.expected):
                return
            assert self.server.poll() is None, f"`{step.line}` exited:\n{output}"
            subprocess.run(["sleep", "0.1"], check=True)
        raise AssertionError(f"`{step.line}` never showed {step.expected}:\n{output}")

    def stop_server(self) -> None:
        """Ctrl+C, as the tutorial says; the server must stop cleanly."""
        if self.server is None:
            return
        server, self.server = self.server, None
        os.killpg(server.pid, signal.SIGINT)
        try:
            code = server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            raise AssertionError("the server did not stop on Ctrl+C") from None
        assert self.server_log is not None
        assert code == 0, f"the server exited with {code}:\n{self.server_log.read_text()}"


def test_the_tutorial_step_by_step(tmp_path: Path) -> None:
    steps = list(tutorial_steps(TUTORIAL.read_text(encoding="utf-8")))
    commands = [step.line for step in steps if isinstance(step, Command)]
    # The tutorial as this test knows it: if it changes shape, look at this test again.
    assert commands[:3] == [
        "python -m venv .venv",
        ". .venv/bin/activate",
        "pip install ../trio_bocaws",
    ]
    assert "python client.py" in commands and "pytest -q" in commands

    copy_of_repository(tmp_path / "trio_bocaws")
    project = tmp_path / "chat-tutorial"
    project.mkdir()
    reader = Reader(project)
    try:
        for step in steps:
            if isinstance(step, SaveFile):
                reader.save(step)
            else:
                reader.type(step)
                if step.line.endswith("chat.app:app"):
                    # "Open http://127.0.0.1:8000/?room=lobby": the page the reader sees.
                    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/?room=lobby") as page:
                        assert page.status == 200
                        assert b"new WebSocket" in page.read()
    finally:
        reader.stop_server()


def test_the_parser_sees_files_and_commands() -> None:
    text = """
Save this as
`echo.py`:

```{literalinclude} snippets/tutorial_echo.py
:language: python
```

```{literalinclude} ../examples/chat/app.py
:pyobject: chat
```

```console
$ python -m trio_bocaws echo:app
[2026-01-05 10:00:00 +0000] [4242] [INFO] Running on http://127.0.0.1:8000 (CTRL + C to quit)
$ pytest -q
1 passed in 0.05s
```
"""
    steps = list(tutorial_steps(text))
    assert steps == [
        SaveFile("echo.py", TUTORIAL.parent / "snippets" / "tutorial_echo.py"),
        Command(
            "python -m trio_bocaws echo:app",
            (
                "[2026-01-05 10:00:00 +0000] [4242] [INFO] Running on http://127.0.0.1:8000 "
                "(CTRL + C to quit)",
            ),
        ),
        Command("pytest -q", ("1 passed in 0.05s",)),
    ]
    server = steps[1]
    assert isinstance(server, Command)
    assert shown(
        server.expected[0], "[x] [1] [INFO] Running on http://127.0.0.1:8000 (CTRL + C to quit)"
    )
    assert shown("1 passed in 0.05s", "1 passed in 1.27s")
    assert not shown("1 passed in 0.05s", "1 failed in 1.27s")
