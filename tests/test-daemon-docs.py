#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Check that tcptapd --help and tcptapd(8) document the same options.

Usage: test-daemon-docs.py PATH-TO-TCPTAPD PATH-TO-tcptapd.8

Compares, option by option, the argument name and the default that --help
prints with the man page's OPTIONS section, and runs the page through groff
with warnings enabled.
"""

import re
import subprocess
import sys

TIMEOUT_S = 30

failures = []


def check(name, expected, actual):
    if expected != actual:
        failures.append(name)
        print(f"FAIL {name}\n  expected: {expected!r}\n  actual:   {actual!r}")


def help_options(tcptapd):
    """Map each option of --help to (argument name or None, default or None)."""
    text = subprocess.run([tcptapd, "--help"], capture_output=True, text=True, check=True,
                          timeout=TIMEOUT_S).stdout
    options = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"  (?:-\w, )?(--[\w-]+)(?: ([A-Z]+))?\s+(.*)", line)
        if match:
            current = match.group(1)
            options[current] = [match.group(2), match.group(3)]
        elif current and line.startswith(" " * 20):
            options[current][1] += " " + line.strip()
        else:
            current = None
    return {name: (arg, default_of(desc)) for name, (arg, desc) in options.items()}


def default_of(text):
    match = re.search(r"\(default ([^)]+)\)", text)
    if not match:
        return None
    # --release-rule prints "sync (default)" instead.
    return match.group(1)


def roff_plain(text):
    text = re.sub(r"\\f[BIRP]", "", text)
    text = text.replace("\\-", "-").replace("\\(dq", '"')
    return re.sub(r"^\.(?:B|I|BI|BR|IR|RB|RI)\s+", "", text)


def man_options(man_page):
    """Map each option of the OPTIONS section to (argument name, default)."""
    with open(man_page) as f:
        lines = f.read().splitlines()
    options = {}
    in_options = False
    current = None
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            in_options = line == ".SH OPTIONS"
            current = None
            continue
        if not in_options:
            continue
        if line == ".TP" and i + 1 < len(lines):
            tag = roff_plain(lines[i + 1]).replace('"', " ").split()
            names = [w.rstrip(",") for w in tag if w.startswith("--")]
            arg = next((w for w in tag if re.fullmatch(r"[A-Z]+", w)), None)
            current = names[-1] if names else None
            if current:
                options[current] = [arg, ""]
            continue
        if current and not line.startswith(".TP"):
            options[current][1] += " " + roff_plain(line)
    result = {}
    for name, (arg, desc) in options.items():
        desc = re.sub(r"\s+", " ", desc)
        # The page writes "(default 10, range 1 to 1000)"; the range is extra.
        match = re.search(r"\(default\s+([^,)]+)", desc)
        result[name] = (arg, match.group(1).strip() if match else None)
    return result


def main():
    tcptapd, man_page = sys.argv[1:3]
    from_help = help_options(tcptapd)
    from_man = man_options(man_page)
    check("options in --help and tcptapd(8)", sorted(from_help), sorted(from_man))
    for name in sorted(set(from_help) & set(from_man)):
        check(f"{name} argument", from_help[name][0], from_man[name][0])
        # The man page states the defaults without units or formatting.
        if from_help[name][1] is not None:
            check(f"{name} default", from_help[name][1], from_man[name][1])

    groff = subprocess.run(["groff", "-man", "-ww", "-z", man_page], capture_output=True,
                           text=True, timeout=TIMEOUT_S)
    check("groff warnings", "", groff.stderr.strip())

    checks = 1 + 2 * len(set(from_help) & set(from_man)) + 1
    print(f"{checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
