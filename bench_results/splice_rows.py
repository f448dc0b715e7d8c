"""Replace the rows of one order in bench_results/bench_scan_h200.{txt,json} (and the README's table) with those of a
later `scripts/bench_scan.py --orders M` run, each marked with that run (field `run`, a note line in the .txt):

    python3 bench_results/splice_rows.py --m 2 --run-json OUT/bench_scan_m2.json --run-txt OUT/bench_scan_m2.txt \
        --run "2026-12-02 (...)" --note "(m = 2 rows, ...)" --replace-note "(m = 2 rows,"
"""

import argparse
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "bench_scan_h200")
README = os.path.join(HERE, "..", "README.md")


def _table_rows(lines, m):
    """{(op, B): (index, the row's lines: its [B, T, N] line and its time-last line where there is one)}."""
    rows = {}
    for i, line in enumerate(lines):
        parts = line.split()
        if parts and parts[0] in ("hlru", "bdlru") and len(parts) > 5 and parts[4] == str(m):
            rows[(parts[0], int(parts[1]))] = (i, [line] + ([lines[i + 1]] if "time-last" in lines[i + 1] else []))
    return rows


def _splice_table(text, new_text, m):
    lines, new = text.split("\n"), _table_rows(new_text.split("\n"), m)
    skip = set()
    for key, (i, old) in _table_rows(lines, m).items():
        lines[i] = "\n".join(new[key][1])
        skip.update(range(i + 1, i + len(old)))
    return "\n".join(line for i, line in enumerate(lines) if i not in skip)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, required=True)
    ap.add_argument("--run-json", required=True)
    ap.add_argument("--run-txt", required=True)
    ap.add_argument("--run", required=True, help="the rows' `run` field")
    ap.add_argument("--note", required=True, help="the .txt's note line on these rows")
    ap.add_argument("--replace-note", required=True, help="how the note line being replaced starts")
    args = ap.parse_args()
    key = lambda r: (r["op"], r["B"], r["m"])  # noqa: E731
    new = json.load(open(args.run_json))
    new_rows = {key(r): dict(r, run=args.run) for r in new["rows"]}
    table = json.load(open(TABLE + ".json"))
    table["rows"] = [new_rows.get(key(r), r) for r in table["rows"]]
    table["table"] = _splice_table(table["table"], new["table"], args.m)
    with open(TABLE + ".json", "w") as f:
        json.dump(table, f, indent=1)
    lines = []
    for line in open(TABLE + ".txt").read().split("\n"):
        if line.startswith('{"op"'):
            line = json.dumps(new_rows.get(key(json.loads(line)), json.loads(line)))
        elif line.startswith(args.replace_note):
            line = args.note
        lines.append(line)
    with open(TABLE + ".txt", "w") as f:
        f.write(_splice_table("\n".join(lines), new["table"], args.m))
    readme = open(README).read().split("\n")
    by_key = {(r["op"], r["B"]): r for r in new["rows"]}
    for i, line in enumerate(readme):
        found = re.match(rf"\| (hlru|bdlru) \| (\[B, T, N\]|\*\*time-last\*\*) \| (\d+) \| (\d+) \| (\d+) \| {args.m} \|",
                         line)
        if not found:
            continue
        r = by_key[(found[1], int(found[3]))]
        if found[2].startswith("["):
            cells = f"{r['fwd_ms']:.3f} | {r['fwd_pct_copy']:.1f} | {r['fwdbwd_ms']:.3f} | {r['fwdbwd_pct_copy']:.1f}"
        else:
            cells = (f"{r['time_last_fwd_ms']:.3f} | **{r['time_last_fwd_pct_copy']:.1f}** | "
                     f"{r['time_last_fwdbwd_ms']:.3f} | **{r['time_last_fwdbwd_pct_copy']:.1f}**")
        rest = line[found.end():].split("|")[4:]  # the cells after the four numbers (peers' speed-ups)
        readme[i] = found[0] + " " + cells + " |" + "|".join(rest)
    with open(README, "w") as f:
        f.write("\n".join(readme))


if __name__ == "__main__":
    main()
