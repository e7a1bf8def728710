#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Validate tcptapd stream lines (JSONL) against docs/tcptap.schema.json.

Reads the files named on the command line, or stdin, one JSON object per
line. Prints FILE:LINE, the reason and the line for every line that fails,
and exits 1 if any did. With --expect-invalid every line must fail instead,
which is how the tests check that the schema rejects known-bad messages.

Needs Debian's python3-jsonschema (4.x); run it with /usr/bin/python3.
"""

import argparse
import json
import pathlib
import sys

import jsonschema

DEFAULT_SCHEMA = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tcptap.schema.json"


def reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def reject_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f'duplicate key "{key}"')
        obj[key] = value
    return obj


def parse_line(text):
    """Parse one line as strict JSON: no NaN or Infinity, no duplicate keys."""
    return json.loads(text, parse_constant=reject_constant, object_pairs_hook=reject_duplicates)


def describe(error):
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {error.message}"


def check_message(validator, defs_validators, message):
    """Return a list of problems with one decoded message; empty if it is valid."""
    if validator.is_valid(message):
        return []
    # oneOf reports every branch; the branch named by "type" gives the useful errors.
    kind = message.get("type") if isinstance(message, dict) else None
    if kind in ("connect", "accept", "close", "connect_failed"):
        kind = "event"
    branch = defs_validators.get(kind)
    if isinstance(kind, str) and branch is None:
        return [f'unknown message type "{kind}"']
    if branch is None:
        best = jsonschema.exceptions.best_match(validator.iter_errors(message))
        return [describe(best) if best else "does not match any message type"]
    return [describe(e) for e in sorted(branch.iter_errors(message), key=lambda e: e.path)]


def check_stream(name, stream, validator, defs_validators, expect_invalid):
    failures = 0
    lines = 0
    for number, raw in enumerate(stream, start=1):
        lines += 1
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        text = raw.decode("utf-8", errors="backslashreplace")
        try:
            # UnicodeDecodeError is a ValueError: the stream must be UTF-8.
            problems = check_message(validator, defs_validators, parse_line(raw.decode("utf-8")))
        except ValueError as err:
            problems = [f"invalid JSON: {err}"]

        if expect_invalid and not problems:
            print(f"{name}:{number}: expected invalid, but the line validates\n  {text}")
            failures += 1
        elif not expect_invalid and problems:
            print(f"{name}:{number}: {'; '.join(problems)}\n  {text}")
            failures += 1
    if lines == 0:
        print(f"{name}: no lines to validate")
        failures += 1
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", type=pathlib.Path, default=DEFAULT_SCHEMA,
                        help="schema file (default: %(default)s)")
    parser.add_argument("--expect-invalid", action="store_true",
                        help="require every line to fail validation")
    parser.add_argument("files", nargs="*", type=pathlib.Path,
                        help="JSONL files (default: stdin)")
    args = parser.parse_args()

    schema = json.loads(args.schema.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    checker = cls.FORMAT_CHECKER
    validator = cls(schema, format_checker=checker)
    defs_validators = {
        name: cls({"$ref": f"#/$defs/{name}", **{k: v for k, v in schema.items() if k != "oneOf"}},
                  format_checker=checker)
        for name in schema["$defs"]
    }

    failures = 0
    if not args.files:
        failures += check_stream("<stdin>", sys.stdin.buffer, validator, defs_validators,
                                 args.expect_invalid)
    for path in args.files:
        with path.open("rb") as stream:
            failures += check_stream(str(path), stream, validator, defs_validators,
                                     args.expect_invalid)

    if failures:
        print(f"{failures} line(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
