"""The README, pasted top to bottom: every ```sh block that is not marked
`<!-- readme: not pasted (why) -->` runs, in order, in one bash session (so the ids one block
captures are there for the next), against a real `threadline serve` process, with only
`TL_URL` and `TL_KEY` set, as the first start prints them. Any curl answered with a non-2xx
status fails the run (`--fail-with-body`), and so does an unset variable (`set -u`).

The model behind the README's model names is a fake that echoes (the examples are judged,
not the bundled model's answers); everything else is the server as `make serve` runs it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.server_process import ServerProcess

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_PASTED = re.compile(r"^<!-- readme: not pasted \((.+)\) -->$")
PRELUDE = """\
set -euo pipefail
curl() { command curl -sS --fail-with-body "$@" || return $?; echo; }
"""


def pasted_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of each ```sh block, but those marked not pasted."""
    lines = text.splitlines()
    blocks: list[tuple[int, str]] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```sh":
            start = index + 1
            end = lines.index("```", start)
            previous = next((x for x in reversed(lines[:index]) if x.strip()), "")
            if not NOT_PASTED.match(previous.strip()):
                blocks.append((start + 1, "\n".join(lines[start:end])))
            index = end
        index += 1
    return blocks


def test_the_readme_marks_why_a_block_is_not_pasted() -> None:
    text = README.read_text()
    skipped = [m.group(1) for m in map(NOT_PASTED.match, text.splitlines()) if m]
    assert skipped and all(len(why) > 10 for why in skipped)
    assert len(pasted_blocks(text)) >= 10
    assert "$TL/" not in text and not re.search(r"\$KEY\b(?!_)", text)


def test_the_readme_pasted_top_to_bottom_runs(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        models={"smollm2-135m": {"provider": "fake", "replies": ["echo"]}},
    )
    server.start()
    try:
        script = PRELUDE + "".join(
            f'\necho "### README line {line}" >&2\n{body}\n'
            for line, body in pasted_blocks(README.read_text())
        )
        work = tmp_path / "paste"
        work.mkdir()
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(work),
            "TL_URL": server.base_url,
            "TL_KEY": server.key or "",
        }
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    where = [line for line in done.stderr.splitlines() if line.startswith("### README")]
    assert done.returncode == 0, (
        f"failed after {where[-1] if where else 'the start'}:\n"
        f"{done.stderr[-3000:]}\n--- stdout ---\n{done.stdout[-3000:]}"
    )
    assert '"status": "ok"' in done.stdout.replace('"status":"ok"', '"status": "ok"')
