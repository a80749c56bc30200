"""`netdsl serve`: a model behind HTTP on Ray Serve, with dynamic batching. See :mod:`netdsl.distributed`."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import UsageError
from ..text import plain
from .common import add_weight_options, compile_model, sigterm_as_interrupt


def cmd_serve(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..session import model_source
    from .run import read_labels

    if not 0 < args.port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    for option, value in (("--replicas", args.replicas), ("--max-batch", args.max_batch), ("--topk", args.topk)):
        if value < 1:
            raise UsageError(f"{option} must be at least 1")
    if args.batch_wait_ms < 0:
        raise UsageError("--batch-wait-ms must not be negative")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.max_body_mb <= 0:
        raise UsageError("--max-body-mb must be positive")
    labels = read_labels(args.labels)
    model, _, options = compile_model(args)  # a .net compiled once, here
    source = model_source(model)
    started = distributed.connect(args.ray)
    sigterm_as_interrupt()  # Ray replaced the command's handler
    app = f"netdsl-{source.name}"
    serve_options = distributed.ServeOptions(
        port=args.port, host=args.host, replicas=args.replicas, max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms, labels=labels, topk=args.topk, engine=args.engine, device=args.device,
        threads=args.threads or 1, cpus=float(args.threads or 1), gpus=0.0 if args.device == "cpu" else 1.0,
        opt_level=args.opt_level, precision=options["dtype"], max_body=int(args.max_body_mb * 2**20))
    try:
        try:
            url = distributed.start_service(source, serve_options, app)
            print(f"netdsl serve: {plain(source.name, 200)} with {args.replicas} replica(s) at {url} "
                  f"(POST {url}:predict); Ctrl-C stops", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("netdsl serve: stopping", file=sys.stderr, flush=True)
        finally:
            try:
                distributed.stop_service(app, shutdown=started)
            except Exception:  # noqa: BLE001 - stopping is best effort; Ray's shutdown below ends the rest
                pass
    finally:
        if started:
            distributed.ray_module().shutdown()
    print("netdsl serve: stopped", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP on Ray Serve, with dynamic batching")
    p.add_argument("model", help="a .net source file (compiled once, here) or a compiled .onnx model")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes the service to the network)")
    p.add_argument("--replicas", type=int, default=1, metavar="N", help="model replicas (default 1)")
    p.add_argument("--max-batch", type=int, default=8, metavar="B",
                   help="most requests gathered into one model call (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=10.0, metavar="T",
                   help="how long a request waits for others to join its batch (default 10)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="join a Ray cluster: auto or ray://host:port (default: a local Ray instance)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line: answers give the top-k classes")
    p.add_argument("--topk", type=int, default=5, help="classes in each answer with --labels (default 5)")
    p.add_argument("--max-body-mb", type=float, default=32.0, metavar="MB",
                   help="largest request body accepted (default 32)")
    p.add_argument("--network", metavar="NAME", help="the network to use when a .net file holds several")
    p.add_argument("--arg", action="append", metavar="NAME=VALUE", help="override a network parameter (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="weight-initialisation seed for .net models (default 0)")
    p.add_argument("--engine", default="ort", help="execution engine: ort (ONNX Runtime) or trt (TensorRT)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or tensorrt (ONNX Runtime's TensorRT provider)")
    p.add_argument("--threads", type=int, metavar="N", help="inference threads (and CPUs) per replica (default 1)")
    p.add_argument("--opt-level", default="all", choices=("disable", "basic", "extended", "all"),
                   help="ONNX Runtime graph optimisation level (default all)")
    add_weight_options(p)
    p.set_defaults(func=cmd_serve)


