"""`corral drain BOT`, `corral pause QUEUE`, `corral resume QUEUE`: operator actions, each audited."""

from __future__ import annotations

import argparse
import sys

from corral.cli.common import actor, add_json, add_server, print_json, run, settings
from corral.core.connect import connect
from corral.core.control import drain_bot, pause_queue, resume_queue
from corral.core.log import get_logger
from corral.core.names import PRIORITIES, check_token


def register(sub) -> None:
    p = sub.add_parser("drain", help="ask a bot to finish its jobs, deregister and exit")
    add_server(p)
    add_json(p)
    p.add_argument("bot", metavar="BOT", help="the bot's name (`corral status` lists them)")
    p.set_defaults(func=cmd, action="drain")
    for name, text in (("pause", "pause a queue: bots get no new jobs from it until resumed"), ("resume", "resume a paused queue")):
        p = sub.add_parser(name, help=text)
        add_server(p)
        add_json(p)
        p.add_argument("queue", metavar="QUEUE", help="the queue (`corral status` lists its consumers as work-QUEUE-PRIORITY)")
        p.add_argument("--priority", default="normal", choices=PRIORITIES, help="which of the queue's priorities (default normal)")
        p.set_defaults(func=cmd, action=name)


async def _control(args: argparse.Namespace) -> int:
    cfg = settings(args)
    nc = await connect(cfg, get_logger("control"), wait=False)
    try:
        if args.action == "drain":
            reply = await drain_bot(nc, check_token(args.bot, "bot name"), actor(cfg))
            message = f"bot {args.bot} is draining (state {reply.get('state')})"
        elif args.action == "pause":
            await pause_queue(nc, check_token(args.queue, "queue"), actor(cfg), args.priority)
            reply, message = {"ok": True}, f"queue {args.queue}/{args.priority} paused"
        else:
            await resume_queue(nc, check_token(args.queue, "queue"), actor(cfg), args.priority)
            reply, message = {"ok": True}, f"queue {args.queue}/{args.priority} resumed"
    finally:
        await nc.close()
    if args.json:
        print_json(reply)
    else:
        print(message, file=sys.stderr)
    return 0


def cmd(args: argparse.Namespace) -> int:
    return run(_control, args)
