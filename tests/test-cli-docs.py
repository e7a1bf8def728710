#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Check that tcptap --help, the man page and the bash completion list the same commands and options.

Usage: test-cli-docs.py PATH-TO-TCPTAP PATH-TO-tcptap.1 PATH-TO-COMPLETION

Each source is split into the same three groups: commands, options for every command and
options for watch. The completion is also run in bash, to check that it offers those words.
"""

import re
import subprocess
import sys

TCPTAP, MAN_PAGE, COMPLETION = sys.argv[1:4]
TIMEOUT_S = 30

OPTION = re.compile(r"(?<![\w-])--?[A-Za-z0-9][\w-]*")

failures = []


def check(name, expected, actual):
    if expected != actual:
        failures.append(name)
        if isinstance(expected, set) and isinstance(actual, set):
            expected, actual = sorted(expected), sorted(actual)
        print(f"FAIL {name}\n  expected: {expected!r}\n  actual:   {actual!r}")


def help_groups():
    """Return the commands and the option groups of tcptap --help, and the options with an
    argument."""
    text = subprocess.run([TCPTAP, "--help"], capture_output=True, text=True, check=True,
                          timeout=TIMEOUT_S).stdout
    groups = {"commands": set(), "common": set(), "watch": set()}
    with_argument = set()
    section = None
    for line in text.splitlines():
        if line == "Commands:":
            section = "commands"
        elif line == "Options for every command:":
            section = "common"
        elif line == "Options for watch:":
            section = "watch"
        elif not line.startswith("  "):
            section = None
        elif section == "commands":
            groups["commands"].add(line.split()[0])
        elif section and line.strip().startswith("-"):
            # The option column ends where two blanks start the description.
            synopsis = re.split(r"\s{2,}", line.strip())[0]
            names = OPTION.findall(synopsis)
            groups[section].update(names)
            if re.search(r"\s[A-Z]", synopsis):
                with_argument.update(names)
    return groups, with_argument


def roff_text(line):
    """Strip roff macros and font escapes from one man page line."""
    line = re.sub(r"^\.(B|I|BR|BI|IB|RB|IR|RI)\s+", "", line)
    line = re.sub(r"\\f[BIRP]", "", line)
    return line.replace("\\-", "-").replace('"', "")


def man_groups():
    """Return the commands and option groups of the man page, from its .TP item tags."""
    groups = {"commands": set(), "common": set(), "watch": set()}
    section = None
    tag_next = False
    with open(MAN_PAGE, encoding="utf-8") as f:
        for line in f.read().splitlines():
            if line.startswith(".SH"):
                section = "commands" if line == ".SH COMMANDS" else None
            elif line.startswith(".SS"):
                section = {'.SS "Options for every command"': "common",
                           '.SS "Options for watch"': "watch"}.get(line)
            if line == ".TP":
                tag_next = True
                continue
            if tag_next and section == "commands":
                groups["commands"].add(roff_text(line).split()[0])
            elif tag_next and section:
                groups[section].update(OPTION.findall(roff_text(line)))
            tag_next = False
    return groups


def completion_groups():
    """Return the word lists of the completion and the options whose argument it completes."""
    with open(COMPLETION, encoding="utf-8") as f:
        text = f.read()

    def words(variable):
        m = re.search(rf'local {variable}="([^"]*)"', text)
        return set(m.group(1).split()) if m else set()

    # Options that take an argument are the patterns of the `case $prev` branches.
    case_block = text[text.index("case $prev in"):text.index("esac")]
    with_argument = set()
    for pattern in re.findall(r"^\s*(-[^)\s]*)\)", case_block, re.MULTILINE):
        with_argument.update(pattern.split("|"))
    groups = {"commands": words("commands"), "common": words("common_options"),
              "watch": words("watch_options")}
    return groups, with_argument


def complete(*words):
    """Run the completion function for the command line `tcptap WORDS...` and return its
    candidates."""
    script = (f'source "{COMPLETION}"\n'
              'COMP_WORDS=(tcptap "$@"); COMP_CWORD=$#; COMPREPLY=()\n'
              '_tcptap\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    result = subprocess.run(["bash", "-c", script, "bash", *words], capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    return set(result.stdout.split())


def main():
    help_, help_with_argument = help_groups()
    man = man_groups()
    completion, completion_with_argument = completion_groups()

    for group in ("commands", "common", "watch"):
        check(f"help lists {group}", True, len(help_[group]) > 0)
        check(f"man page {group} match --help", help_[group], man[group])
        check(f"completion {group} match --help", help_[group], completion[group])
    check("completion options with an argument match --help", help_with_argument,
          completion_with_argument)

    check("completion of the command", help_["commands"], complete(""))
    check("completion of watch options", {o for o in help_["common"] | help_["watch"]
                                          if o.startswith("--")}, complete("watch", "--"))
    check("completion of dump options", {o for o in help_["common"] if o.startswith("--")},
          complete("dump", "--"))
    check("completion after an option argument", help_["common"] | help_["watch"],
          complete("--socket", "/tmp/x", "watch", "-"))
    check("completion of --type", {"connect", "connect_failed"}, complete("watch", "--type",
                                                                          "conn"))
    check("completion of a --type list", {"connect,accept"}, complete("watch", "-t",
                                                                      "connect,a"))

    if failures:
        print(f"{len(failures)} checks failed")
        return 1
    print("ok: --help, man page and completion agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
