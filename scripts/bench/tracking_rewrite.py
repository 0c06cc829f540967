#!/usr/bin/env python3
"""Benchmark the click/open tracking rewrite of outgoing messages.

Builds newsletter-like messages (multipart/alternative: a plain-text part and
an HTML part with N links, optionally a PDF attachment) and times
``postald.tracking.rewrite_raw`` on them: the MIME parse, the HTML parse,
the link and pixel rewrite and the re-encoding.  No database is involved;
recording links is a single multi-row insert per message.

    .venv/bin/python scripts/bench/tracking_rewrite.py [--links 50] [--messages 200] [--attachment-kb 500]

Prints messages per second, MB per second and the peak memory allocated.
"""

from __future__ import annotations

import argparse
import email.policy
import time
import tracemalloc
from email.message import EmailMessage

from postald.tracking import TrackingSettings, rewrite_raw


def newsletter(links: int, attachment_kb: int) -> bytes:
    paragraphs = "".join(
        f'<p>Article {i}: Grüße und Neuigkeiten <a href="https://news.example.net/articles/{i}?utm_source=mail&amp;id={i}">'
        f"read more</a></p>\n" for i in range(links)
    )
    html = f"<html><head><title>News</title></head><body>{paragraphs}</body></html>"
    text = "\n".join(f"Article {i}: https://news.example.net/articles/{i}?utm_source=mail&id={i}" for i in range(links))
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "News <news@example.com>"
    message["To"] = "reader@example.org"
    message["Subject"] = "This week's news"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if attachment_kb:
        message.add_attachment(bytes(range(256)) * (attachment_kb * 4), maintype="application", subtype="pdf",
                               filename="issue.pdf")
    return message.as_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=50, help="links per message (default 50)")
    parser.add_argument("--messages", type=int, default=200, help="messages to rewrite (default 200)")
    parser.add_argument("--attachment-kb", type=int, default=0, help="size of a PDF attachment in KiB (default none)")
    args = parser.parse_args()

    raw = newsletter(args.links, args.attachment_kb)
    settings = TrackingSettings(base_url="https://click.example.com", server_token="abcdef",
                                message_token="A" * 16, track_clicks=True, track_loads=True,
                                excluded_hosts=frozenset())
    rewrite_raw(raw, settings)  # warm up

    started = time.perf_counter()
    tracked = 0
    for _ in range(args.messages):
        tracked += len(rewrite_raw(raw, settings).links)
    elapsed = time.perf_counter() - started

    tracemalloc.start()
    rewrite_raw(raw, settings)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"message size        {len(raw) / 1024:.1f} KiB, {args.links} links in each part")
    print(f"messages rewritten  {args.messages} in {elapsed:.2f} s")
    print(f"throughput          {args.messages / elapsed:.1f} messages/s, {len(raw) * args.messages / elapsed / 1e6:.2f} MB/s")
    print(f"links tracked       {tracked} ({tracked / elapsed:.0f} links/s)")
    print(f"peak allocation     {peak / 1024 / 1024:.1f} MiB for one message")


if __name__ == "__main__":
    main()
