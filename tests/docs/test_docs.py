"""The documentation stays true to the repository: links and anchors resolve, every `k2` command it shows
exists, every metric the streaming runbook names is one the streamer registers and its PromQL parses, every
`K2_*` variable it names is read somewhere, and the README keeps the two commands."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

import pytest
import yaml

from k2_ops.cli import build_parser
from k2_ops.paths import REPO_ROOT
from streamer.integrity import SequenceTracker
from streamer.metrics import StreamerMetrics

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
STREAMING_RUNBOOK = DOCS / "runbooks" / "streaming.md"
DOCUMENTS = [README, *sorted(DOCS.rglob("*.md"))]
# Documents outside README/docs that ours link into (their anchors must exist too).
LINK_TARGETS_ALSO_CHECKED = [REPO_ROOT / "docker" / "README.md"]

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def split_markdown(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(prose lines with code spans removed, [(fence info, code block text)])."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    info, body = "", []
    for line in text.splitlines():
        match = FENCE.match(line.strip())
        if fence is None and match:
            fence, info, body = match.group(1), line.strip()[3:].strip(), []
        elif fence is not None and line.strip().startswith(fence):
            blocks.append((info, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            prose.append(line)
    return prose, blocks


def code_spans(text: str) -> list[str]:
    prose, blocks = split_markdown(text)
    spans = [match.group(2) for line in prose for match in CODE_SPAN.finditer(line)]
    return spans + [body for _, body in blocks]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    prose, _ = split_markdown(path.read_text())
    seen: dict[str, int] = {}
    found = set()
    for line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(found)


def relative_links(path: Path) -> list[str]:
    prose, _ = split_markdown(path.read_text())
    links = []
    for line in prose:
        without_code = CODE_SPAN.sub("", line)
        links += [match.group(1) for match in LINK.finditer(without_code)]
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]


def test_the_documents_exist() -> None:
    names = {_rel(path) for path in DOCUMENTS}
    assert {
        "README.md",
        "docs/configuration.md",
        "docs/dagster.md",
        "docs/runbooks/alerts.md",
        "docs/runbooks/streaming.md",
        "docs/runbooks/blue-green.md",
        "docs/soak-and-validation.md",
        "docs/troubleshooting.md",
    } <= names


def test_github_slug_matches_githubs_rules() -> None:
    slug = github_slug("Settings (environment of the Dagster processes)")
    assert slug == "settings-environment-of-the-dagster-processes"
    assert github_slug("`serverShutdown`") == "servershutdown"
    assert github_slug("Rollback (< 2 min)") == "rollback--2-min"
    assert github_slug("Known gaps (production)") == "known-gaps-production"


@pytest.mark.parametrize("document", DOCUMENTS, ids=_rel)
def test_relative_links_resolve(document: Path) -> None:
    problems = []
    for link in relative_links(document):
        target_text, _, anchor = link.partition("#")
        target = (document.parent / target_text).resolve() if target_text else document
        if not target.exists():
            problems.append(f"{link}: {_rel(target) if target.is_relative_to(REPO_ROOT) else target} does not exist")
            continue
        if anchor and target.suffix == ".md" and anchor not in anchors(target):
            problems.append(f"{link}: no heading #{anchor} in {_rel(target)}")
    assert not problems, f"{_rel(document)}: " + "; ".join(problems)


def test_every_document_is_linked_from_the_readme() -> None:
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in relative_links(README)}
    unlinked = [
        _rel(path) for path in DOCUMENTS if path != README and "samples" not in path.parts and path not in linked
    ]
    assert not unlinked, f"README.md does not link {unlinked}"
    for path in LINK_TARGETS_ALSO_CHECKED:
        assert path in linked


def test_readme_keeps_the_two_commands() -> None:
    text = README.read_text()
    assert "make test" in text and "make run" in text


# --- k2 commands ---------------------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


K2_COMMAND = re.compile(r"(?<![\w./-])k2 ([a-z][a-z-]*)(?: ([a-z][a-z|-]*))?")


def k2_commands(text: str) -> set[tuple[str, str | None]]:
    """Every `k2 <command> [<action>]` in the code of a document; `a|b` alternatives are split."""
    found: set[tuple[str, str | None]] = set()
    for code in code_spans(text):
        for match in K2_COMMAND.finditer(code):
            command, actions = match.group(1), match.group(2)
            for action in actions.split("|") if actions else [None]:
                found.add((command, action or None))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=_rel)
def test_every_k2_command_shown_exists(document: Path) -> None:
    commands = _subcommands(build_parser())
    problems = []
    for command, action in sorted(k2_commands(document.read_text()), key=str):
        if command not in commands:
            problems.append(f"k2 {command} (known: {', '.join(sorted(commands))})")
            continue
        actions = _subcommands(commands[command])
        if actions and action is not None and action not in actions:
            problems.append(f"k2 {command} {action} (known: {', '.join(sorted(actions))})")
    assert not problems, f"{_rel(document)} shows commands the k2 CLI does not have: {problems}"


def test_the_readme_lists_every_k2_command() -> None:
    shown = k2_commands(README.read_text())
    missing = []
    for command, parser in _subcommands(build_parser()).items():
        actions = _subcommands(parser)
        if actions:
            missing += [f"k2 {command} {action}" for action in actions if (command, action) not in shown]
        elif not any(name == command for name, _ in shown):
            missing.append(f"k2 {command}")
    assert not missing, f"README.md does not show {missing}"


# --- metrics ---------------------------------------------------------------------------------------------


def registered_metric_names() -> set[str]:
    """Every sample name a streamer's /metrics can carry (its registry: contract metrics + process collector)."""
    metrics = StreamerMetrics("blue", SequenceTracker())
    names = set()
    for family in metrics.registry.collect():
        # Labelled children appear with their first event: name the family as it is exported.
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        names.update(sample.name for sample in family.samples if not sample.name.endswith("_created"))
    return names


# A metric name, not a JSON key such as /readyz's "kafka_reachable".
METRIC = re.compile(r'(?<!["\w])((?:binance|kafka|serializer|streamer|process|memory)_[a-z0-9_]*[a-z0-9])(?!["\w])')


def test_every_metric_in_the_streaming_runbook_is_registered() -> None:
    named = set(METRIC.findall(STREAMING_RUNBOOK.read_text()))
    unknown = named - registered_metric_names()
    assert named and not unknown, f"docs/runbooks/streaming.md names metrics the streamer does not register: {unknown}"


def test_the_streaming_runbook_describes_every_contract_metric() -> None:
    from streamer.metrics import CONTRACT_METRICS

    named = set(METRIC.findall(STREAMING_RUNBOOK.read_text()))
    assert set(CONTRACT_METRICS) <= named, set(CONTRACT_METRICS) - named


def promql_of_streaming_runbook() -> list[str]:
    """The PromQL column of the runbook's tables, and ```promql blocks of every document."""
    queries = []
    columns: list[str] | None = None
    for line in STREAMING_RUNBOOK.read_text().splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if columns is None:
            columns = cells
        elif "PromQL" in columns and not set(line) <= set("|-: "):
            cell = cells[columns.index("PromQL")]
            queries += [match.group(2) for match in CODE_SPAN.finditer(cell)]
    for document in DOCUMENTS:
        queries += [body for info, body in split_markdown(document.read_text())[1] if info == "promql"]
    return [query for block in queries for query in block.splitlines() if query.strip()]


def test_promql_in_the_docs_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make setup` installs it"
    queries = promql_of_streaming_runbook()
    assert len(queries) >= 15
    registered = registered_metric_names()
    for query in queries:
        assert set(METRIC.findall(query)) <= registered, query
    rules = {"groups": [{"name": "docs", "rules": [
        {"record": f"docs:query_{index}", "expr": query} for index, query in enumerate(queries)
    ]}]}
    path = tmp_path / "docs_queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- settings ------------------------------------------------------------------------------------------------


@cache
def k2_variables_in_code() -> frozenset[str]:
    """Every K2_* name written in the code and deployment files (f-string prefixes such as K2_IMAGE_ included)."""
    found: set[str] = set()
    for folder in ("streamer", "k2_ops", "dagster_project", "docker"):
        for path in (REPO_ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yaml", ".yml", ".example", ".Dockerfile", ""):
                try:
                    found.update(re.findall(r"K2_[A-Z0-9_]*", path.read_text()))
                except UnicodeDecodeError:
                    continue
    found.update(re.findall(r"K2_[A-Z0-9_]*", (REPO_ROOT / "docker" / ".env.example").read_text()))
    return frozenset(found)


@pytest.mark.parametrize("document", DOCUMENTS, ids=_rel)
def test_every_k2_variable_named_is_read_by_the_code(document: Path) -> None:
    known = k2_variables_in_code()
    named = set(re.findall(r"K2_[A-Z0-9_]*[A-Z0-9]|K2_[A-Z0-9_]*_(?=<)", document.read_text()))
    unknown = sorted(name for name in named if name not in known)
    assert not unknown, f"{_rel(document)} names settings no code reads: {unknown}"


# --- soak and validation guide ---------------------------------------------------------------------------------

SOAK_GUIDE = DOCS / "soak-and-validation.md"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_profile_table_matches_the_profiles() -> None:
    from k2_ops.validation.profiles import get_profile

    rows = [line for line in SOAK_GUIDE.read_text().splitlines() if line.startswith("| ")]
    header = next(row for row in rows if row.startswith("| profile field |"))
    columns = [cell.strip().strip("`") for cell in header.strip("|").split("|")]
    profiles = {name: get_profile(name) for name in columns[2:]}
    checked = 0
    for row in rows[rows.index(header) + 2 :]:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) != len(columns) or not cells[0].startswith("`"):
            break
        field, setting = cells[0].strip("`"), cells[1].strip("`")
        for name, cell in zip(columns[2:], cells[2:], strict=True):
            assert _number(cell) == getattr(profiles[name], field), f"{field} of {name}: doc {cell}"
            if setting.startswith("K2_"):
                assert _number(profiles[name].streamer_env()[setting]) == _number(cell), f"{setting} of {name}"
        checked += 1
    assert checked >= 10


def test_the_memory_profile_schema_names_every_key() -> None:
    import json

    from k2_ops.validation import memory_profile

    _, blocks = split_markdown(SOAK_GUIDE.read_text())
    schema = next(body for _, body in blocks if '"schema_version": 1' in body)
    sample = json.loads((DOCS / "samples" / "soak" / "memory_profile.json").read_text())
    keys = set(memory_profile.SAMPLE_KEYS) | set(memory_profile.summarize(sample["samples"])) | set(sample["metadata"])
    missing = sorted(key for key in keys if f'"{key}"' not in schema)
    assert not missing, f"the memory profile schema in {_rel(SOAK_GUIDE)} lacks {missing}"
