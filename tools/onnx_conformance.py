"""Run ONNX's node conformance cases on our targets and say what passes (issue 13).

    .venv/bin/python tools/onnx_conformance.py [--targets numpy,llvm] [--cases REGEX]
        [--update-expected] [--report docs/onnx-support.md] [--json PATH]

Prints the counts per target (passed; refused at import; wrong numbers; crash at import, compile
or run) and the biggest failure causes; progress goes to stderr. ``--report`` writes the per-op
support table (docs/onnx-support.md). ``--update-expected`` rewrites
tests/onnx_conformance_expected.py from the numpy run: a listed reason is kept while its case
still fails for the same broad cause, and a case that passes leaves the list. ``--json`` writes
every case's result. tests/test_onnx_conformance.py runs the numpy cases in ``make test``; llvm
compiles every importable case (about two minutes for all of them on two cores), so its run
lives here. llvm builds go to a temporary compile cache, removed at the end, unless
GRAPHDSL_CACHE_DIR is set: a cold cache measures compile times honestly, and the user's cache
does not fill with hundreds of one-op graphs.
"""
from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import onnx

import graphdsl.onnx   # noqa: F401 -- fills the import table, read below
from backends.onnx import conformance as conf
from graphdsl.files import atomic_write_text
from graphdsl.onnx.load import MIN_OPSET
from graphdsl.onnx.table import IMPORT

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "onnx_conformance_expected.py"
TARGETS = ("numpy", "llvm")
FAILURES = tuple(o for o in conf.OUTCOMES if o != conf.PASSED)


def main(argv=None) -> int:
    args = _parse(argv)
    cases = [c for c in conf.node_cases() if re.search(args.cases, c.name)]
    if not cases:
        raise SystemExit(f"no node case matches --cases {args.cases!r}")
    results = {}
    with _llvm_cache(args.targets):
        for target in args.targets:
            results[target] = run_target(cases, target)
    for target in args.targets:   # stdout, unless the JSON goes there
        print(summary(cases, results[target], target), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        _write_json(args.json, cases, results)
    if args.report:
        atomic_write_text(args.report, report(cases, results, args.command))
        print(f"wrote {args.report}", file=sys.stderr)
    if args.update_expected:
        changes = write_expected(cases, results["numpy"])
        print(f"wrote {EXPECTED.relative_to(ROOT)}: {changes}", file=sys.stderr)
    return 0


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", default="numpy", help="comma-separated, from: numpy, llvm (default numpy)")
    p.add_argument("--cases", default="", help="only the cases whose name matches this regex")
    p.add_argument("--update-expected", action="store_true",
                   help=f"rewrite {EXPECTED.relative_to(ROOT)} from the numpy results")
    p.add_argument("--report", metavar="PATH", help="write the support report (docs/onnx-support.md)")
    p.add_argument("--json", metavar="PATH", help="write every case's result as JSON ('-': stdout)")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown or not args.targets:
        p.error(f"--targets takes {', '.join(TARGETS)}; got {args.targets}")
    if args.update_expected and "numpy" not in args.targets:
        p.error("--update-expected needs the numpy results: add numpy to --targets")
    if args.update_expected and args.cases:
        p.error("--update-expected rewrites the whole list: run it without --cases")
    args.command = (f".venv/bin/python tools/onnx_conformance.py --targets {','.join(args.targets)}"
                    f" --report {args.report}")   # what regenerates the report
    return args


@contextlib.contextmanager
def _llvm_cache(targets):
    """A temporary compile cache for llvm runs (see the module docstring)."""
    if "llvm" not in targets or os.environ.get("GRAPHDSL_CACHE_DIR"):
        yield
        return
    tmp = tempfile.mkdtemp(prefix="graphdsl-onnx-conformance-")
    os.environ["GRAPHDSL_CACHE_DIR"] = tmp
    try:
        yield
    finally:
        del os.environ["GRAPHDSL_CACHE_DIR"]
        shutil.rmtree(tmp, ignore_errors=True)


def run_target(cases, target) -> dict[str, conf.Result]:
    """Every case on ``target``, with a progress line on stderr every 100 cases."""
    results, start, counts = {}, time.perf_counter(), collections.Counter()
    with warnings.catch_warnings():   # a case's inf/NaN inputs make numpy warn; the result says it
        warnings.simplefilter("ignore")
        for i, case in enumerate(cases, 1):
            r = conf.check_case(case, target)
            results[case.name] = r
            counts[r.outcome] += 1
            if i % 100 == 0 or i == len(cases):
                print(f"[{target}] {i}/{len(cases)} cases, {time.perf_counter() - start:.0f} s: "
                      f"{counts[conf.PASSED]} passed", file=sys.stderr, flush=True)
    return results


# -- why a case failed --------------------------------------------------------------------------
def reason(r: conf.Result) -> str:
    """A failure's cause, worded so that cases failing for one reason share it."""
    err = re.sub(r"^\w+: ", "", r.error)           # the exception type; the outcome says enough
    err = err.replace("<ModelProto>: ", "").replace("<ModelProto> ", "the model ")
    if r.outcome == conf.REFUSED:
        m = re.search(r"cannot import: (.*)", err)
        if m:
            return "unsupported op " + ", ".join(re.findall(r"([\w.]+) \(\d+ nodes?\)", m.group(1)))
        if "imports no version of the default ONNX opset" in err:
            return f"unsupported op {r.op} (outside the default ONNX domain)"
        m = re.search(r"uses ONNX opset (\d+), and these of its ops changed before opset \d+[^:]*: (.*)", err)
        if m:
            return f"refused: opset {m.group(1)}, older than {MIN_OPSET}, and {m.group(2)} changed since"
        m = re.search(r"uses ONNX opset (\d+)", err)
        if m:
            return f"refused: opset {m.group(1)} (the importer takes opset {MIN_OPSET} and later)"
        m = re.search(r"has element type (\w+), which graphdsl does not support", err)
        if m:
            return f"refused: element type {m.group(1)}"
        err = re.sub(r"^ONNX (\w+) node '[^']*': ", r"\1: ", err)
        err = re.sub(r"input '[^']*'", "an input", err)
        return f"refused: {err}"
    if r.outcome == conf.WRONG:
        return f"wrong numbers (bug: {r.op}: {err})"
    return f"{r.outcome} (bug: {r.error})"


def top_reasons(results, n=10) -> list[tuple[str, int]]:
    return collections.Counter(reason(r) for r in results.values() if r.outcome != conf.PASSED).most_common(n)


def families(results) -> list[tuple[str, int]]:
    counts = collections.Counter(family(reason(r)) for r in results.values() if r.outcome != conf.PASSED)
    return [(f, counts[f]) for f in FAMILIES if counts[f]]


# -- the console summary -------------------------------------------------------------------------
def importable(cases) -> list:
    """The direct (not expanded) cases of the ops the importer has a row for."""
    return [c for c in cases if not conf.is_expanded(c) and conf.case_op(c) in IMPORT]


def summary(cases, results, target) -> str:
    counts = collections.Counter(r.outcome for r in results.values())
    direct = importable(cases)
    direct_pass = sum(results[c.name].outcome == conf.PASSED for c in direct)
    seconds = sum(r.seconds for r in results.values())
    lines = [f"== {target}: {len(cases)} node cases, {counts[conf.PASSED]} passed ({seconds:.0f} s)"]
    lines += [f"   {o}: {counts[o]}" for o in FAILURES]
    lines.append(f"   cases of ops the importer handles (not expanded): {len(direct)}, {direct_pass} passed")
    lines.append("   failures by cause:")
    lines += [f"   {k:5d}  {f}" for f, k in families(results)]
    lines.append("   top failure reasons:")
    lines += [f"   {k:5d}  {why}" for why, k in top_reasons(results)]
    return "\n".join(lines)


def _write_json(path, cases, results) -> None:
    data = {"onnx": onnx.__version__, "targets": {
        t: [dict(vars(res[c.name]), expanded=conf.is_expanded(c), reason=(
            "" if res[c.name].outcome == conf.PASSED else reason(res[c.name]))) for c in cases]
        for t, res in results.items()}}
    text = json.dumps(data, indent=1)
    if path == "-":
        print(text)
    else:
        atomic_write_text(path, text + "\n")


# -- docs/onnx-support.md ------------------------------------------------------------------------
def report(cases, results, command) -> str:
    """The markdown support report: counts per target, one row per ONNX op, the failure causes,
    and the cases whose outcome differs between targets."""
    targets = [t for t in TARGETS if t in results]
    out = ["# ONNX operator support", "",
           f"Generated by `{command}`; do not edit by hand. ONNX {onnx.__version__}'s node "
           "test cases (`onnx.backend.test`), imported with `graphdsl.from_onnx` and run on each "
           "target through `backends/onnx/conformance.py`, compared with ONNX's expected outputs "
           "(the runner's dtype, shape and rtol/atol checks).", ""]
    out += _counts_table(cases, results, targets) + _op_table(cases, results, targets)
    for t in targets:
        out += ["", f"## Failures on {t}", "", "| cases | cause |", "|---:|---|"]
        out += [f"| {k} | {_md(f)} |" for f, k in families(results[t])]
        out += ["", "The 15 most common reasons:", "", "| cases | reason |", "|---:|---|"]
        out += [f"| {k} | {_md(why)} |" for why, k in top_reasons(results[t], 15)]
    if len(targets) > 1:
        out += ["", "## Cases whose outcome differs between targets", ""]
        out += _differences(cases, results, targets) or ["None."]
    return "\n".join(out) + "\n"


def _counts_table(cases, results, targets) -> list[str]:
    rows = ["| target | cases | passed | " + " | ".join(FAILURES) + " | seconds |",
            "|---|---:|---:|" + "---:|" * len(FAILURES) + "---:|"]
    for t in targets:
        c = collections.Counter(r.outcome for r in results[t].values())
        seconds = sum(r.seconds for r in results[t].values())
        rows.append(f"| {t} | {len(results[t])} | {c[conf.PASSED]} | "
                    + " | ".join(str(c[o]) for o in FAILURES) + f" | {seconds:.0f} |")
    direct = importable(cases)
    passed = ", ".join(f"{t} {sum(results[t][c.name].outcome == conf.PASSED for c in direct)}" for t in targets)
    return rows + ["", f"Direct cases of the {len({conf.case_op(c) for c in direct})} ops the importer "
                   f"has a row for: {len(direct)}; passed: {passed}."]


def _op_table(cases, results, targets) -> list[str]:
    rows = ["", "A case is a direct case of its op, or an *expanded* one: the op's ONNX function body "
            "written out as nodes, which can pass even when the op itself is not imported. "
            "\"importer\" says whether `graphdsl.onnx.table.IMPORT` has a row for the op. "
            "Cells are passed/total.", ""]
    head = ["ONNX op", "importer", *targets, *(f"{t} (expanded)" for t in targets)]
    rows += ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (2 * len(targets))]
    by_op = collections.defaultdict(list)
    for c in cases:
        by_op[conf.case_op(c)].append(c)
    for op in sorted(by_op, key=str.lower):
        direct = [c for c in by_op[op] if not conf.is_expanded(c)]
        expanded = [c for c in by_op[op] if conf.is_expanded(c)]
        cells = [_cell(direct, results[t]) for t in targets] + [_cell(expanded, results[t]) for t in targets]
        rows.append(f"| {op} | {'yes' if op in IMPORT else 'no'} | " + " | ".join(cells) + " |")
    return rows


def _differences(cases, results, targets) -> list[str]:
    rows = []
    for c in cases:
        if len({results[t][c.name].outcome for t in targets}) > 1:
            each = [f"{t} {results[t][c.name].outcome}"
                    + (f" ({results[t][c.name].error})" if results[t][c.name].error else "") for t in targets]
            rows.append(f"- `{c.name}`: " + _md("; ".join(each)))
    return rows


def _cell(cases, results) -> str:
    return f"{sum(results[c.name].outcome == conf.PASSED for c in cases)}/{len(cases)}" if cases else ""


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- tests/onnx_conformance_expected.py ----------------------------------------------------------
def read_expected() -> dict[str, str]:
    """The current list, read as data (the file is a dict literal; nothing in it is run)."""
    if not EXPECTED.exists():
        return {}
    try:
        body = ast.parse(EXPECTED.read_text(encoding="utf-8")).body
    except SyntaxError as e:
        raise SystemExit(f"{EXPECTED}:{e.lineno}: {e.msg}: fix the file (its reasons are kept "
                         f"from it) or restore it with git") from None
    for stmt in body:
        names = [getattr(t, "id", None) for t in getattr(stmt, "targets", [])]
        if isinstance(stmt, ast.Assign) and names == ["EXPECTED_FAILURES"]:
            return ast.literal_eval(stmt.value)
    raise SystemExit(f"{EXPECTED} holds no EXPECTED_FAILURES = {{...}} assignment")


def write_expected(cases, results) -> str:
    """Rewrite the list from a numpy run: the cases failing now. A listed reason is kept while its
    case fails for the same broad cause (``family``), so hand-written reasons survive; when the
    cause changed (the op imports now, but an attribute is refused) the derived reason replaces it.
    Returns what changed, in one line."""
    old = read_expected()
    new, kept = {}, 0
    for c in cases:
        if results[c.name].outcome == conf.PASSED:
            continue
        derived = reason(results[c.name])
        same_cause = c.name in old and family(old[c.name]) == family(derived)
        new[c.name] = old[c.name] if same_cause else derived
        kept += same_cause
    atomic_write_text(EXPECTED, render_expected(new))
    return (f"{len(new)} expected failures: {kept} reasons kept, {len(new) - kept} derived; "
            f"{len(set(old) - set(new))} cases left the list")


def render_expected(expected: dict[str, str]) -> str:
    groups = collections.defaultdict(list)
    for name, why in expected.items():
        groups[family(why)].append((why, name))
    lines = [_EXPECTED_HEADER.strip("\n"), "",
             f"ONNX_VERSION = {onnx.__version__!r}   # the onnx whose node cases this list describes", "",
             "EXPECTED_FAILURES = {"]
    for group in sorted(groups, key=FAMILIES.index):
        lines.append(f"    # -- {group} ({len(groups[group])} cases)")
        lines += [f"    {name!r}: {why!r}," for why, name in sorted(groups[group])]
    lines.append("}")
    return "\n".join(lines) + "\n"


FAMILIES = ("unsupported op", "unsupported element type",
            "refused: a value the importer needs (axes, shape, k, ...) is a graph input",
            "refused: opset older than the importer takes", "refused: other attribute or input",
            "wrong numbers", "crash")


def family(why: str) -> str:
    """The broad cause of a reason (what the expected list and the reports group by)."""
    if why.startswith("unsupported op"):
        return FAMILIES[0]
    if why.startswith("refused: element type"):
        return FAMILIES[1]
    if why.startswith("refused") and "must be known when importing" in why:
        return FAMILIES[2]
    if why.startswith("refused: opset"):
        return FAMILIES[3]
    if why.startswith("refused"):
        return FAMILIES[4]
    if why.startswith("wrong numbers"):
        return FAMILIES[5]
    return FAMILIES[6]


_EXPECTED_HEADER = '''
"""ONNX node conformance cases that fail on the numpy target today, each with its reason.

tests/test_onnx_conformance.py fails a case in this list that passes (remove it: the list only
shrinks) and any case not in it that fails. ``.venv/bin/python tools/onnx_conformance.py
--update-expected`` rewrites this file from a fresh run, grouped by broad cause; a reason written
here is kept while its case still fails for the same broad cause, so edit a reason by hand when
you know the cause better than the derived one.
"""
'''


if __name__ == "__main__":
    sys.exit(main())
