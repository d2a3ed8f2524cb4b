"""Dispatch N emails, as a web app would, with a progress bar.

python produce.py --count 200 --bad 3
"""

from __future__ import annotations

import argparse

from app import SendEmail, bus
from rich.progress import track


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="emails to dispatch")
    parser.add_argument("--bad", type=int, default=0, help="of which to undeliverable addresses")
    args = parser.parse_args()
    for n in track(range(args.count), description=f"dispatching {args.count} emails"):
        domain = "invalid.example" if n < args.bad else "example.com"
        bus.dispatch(
            SendEmail(
                to=f"user{n}@{domain}",
                subject=f"Welcome aboard, user {n}",
                body="Thanks for signing up. This mail was sent by a courier worker.",
            )
        )
    bus.close()


if __name__ == "__main__":
    main()
