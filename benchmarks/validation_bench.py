"""The cost of checking a trigger call's arguments: jsonschema_rs's yes/no next to jsonschema alone.

    python benchmarks/validation_bench.py          # prints a table, writes results/validation.json

``Trigger.argument_errors`` asks jsonschema_rs "valid?" and lets jsonschema word the errors only when
the answer is no. This measures, for valid arguments of each example trigger, both validators' time per
call (best of 5 repeats), which is the figure behind keeping the second validator; the property test
``tests/test_trigger_validation.py`` holds the two to the same answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook_dsl.runtime.trigger import _validators, load_trigger  # noqa: E402

ARGUMENTS: dict[str, dict[str, Any]] = {
    "check_order": {"order_number": "A-1001"},
    "create_ticket": {
        "issue_title": "Printer says PC LOAD LETTER",
        "issue_description": "It started this morning.",
        "priority": "high",
        "customer_name": "Ana Smith",
        "customer_email": "ana@example.com",
    },
    "analyze_image": {"question": "What is in this picture?"},
}


def per_call_us(check: Any, arguments: dict[str, Any], number: int) -> float:
    return min(timeit.repeat(lambda: check(arguments), number=number, repeat=5)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "validation.json"), metavar="FILE")
    args = parser.parse_args()
    rows = []
    for name, arguments in ARGUMENTS.items():
        trigger = load_trigger(ROOT / "examples" / "triggers" / f"{name}.json")
        assert trigger.argument_errors(arguments) == [], name
        quick, full = _validators(trigger)
        assert quick is not None
        rust = per_call_us(quick.is_valid, arguments, 20_000)
        python = per_call_us(full.is_valid, arguments, 2_000)
        rows.append(
            {
                "trigger": name,
                "jsonschema_rs_us": round(rust, 2),
                "jsonschema_us": round(python, 1),
                "ratio": round(python / rust),
            }
        )
    print(f"{'trigger':16}{'jsonschema_rs µs':>18}{'jsonschema µs':>16}{'ratio':>8}")
    for row in rows:
        print(f"{row['trigger']:16}{row['jsonschema_rs_us']:>18}{row['jsonschema_us']:>16}{row['ratio']:>7}x")
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
