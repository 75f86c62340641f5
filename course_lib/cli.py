"""The command line: parse the arguments, then hand over to the library.

    python -m course_lib pretrain --config configs/pretrain_tiny.json --set train.max_steps=20 model.n_layer=2
    python -m course_lib finetune --config configs/finetune_bbc.json --set finetune.mode=lora
    python -m course_lib generate --checkpoint ~/.cache/course_lib/runs/pretrain_tiny/last.pt --prompt "The"
    python -m course_lib predict ~/.cache/course_lib/apps/digit-cnn-full-v1 digit.png
    python -m course_lib chat --model smollm2 --prompt "What is a transformer?"
    python -m course_lib serve --model smollm2 --port 8000

Each subcommand is a row of :data:`SUBCOMMANDS`: its help line, the function that declares its arguments
and the function that runs it. What runs lives elsewhere: configs in :mod:`course_lib.config`, the runs
in :mod:`course_lib.runs`, the predictor in :mod:`course_lib.deploy`, the chat REPL in :mod:`course_lib.chat`
and the HTTP server in :mod:`course_lib.serve`. ``pretrain`` and ``finetune`` run
unchanged under torchrun (``torchrun --nproc_per_node 4 -m course_lib pretrain ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from course_lib.config import ConfigError

# ----------------------------------------------------------------------------------------------------
# one pair of functions per subcommand: declare its arguments, run it


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a JSON or TOML config file (see configs/)")
    example = "override config values, e.g. train.max_steps=20 model.n_layer=2"
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE", help=example)
    p.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
    p.add_argument("--print-config", action="store_true", help="print the merged config and exit")


def _train(args: argparse.Namespace) -> None:
    from course_lib.config import load_config
    from course_lib.runs import run_finetune, run_pretrain

    config = load_config(args.command, args.config, args.set)
    if args.print_config:
        print(json.dumps(config, indent=2))
        return
    run = run_pretrain if args.command == "pretrain" else run_finetune
    run(config, args.resume, Path(args.config).stem if args.config else None)


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, help="a checkpoint written by pretrain (last.pt or best.pt)"
    )
    p.add_argument("--prompt", default="", help="text to continue (empty: start from scratch)")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = more random")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with mass p")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")


def _generate(args: argparse.Namespace) -> None:
    from course_lib.runs import generate_from_checkpoint

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    text = generate_from_checkpoint(
        args.checkpoint,
        args.prompt,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        device=args.device,
    )
    print(text, flush=True)


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a folder written by course_lib.deploy.save_for_inference")
    p.add_argument(
        "inputs", nargs="+", help="texts (quote each one), or image files / .npy arrays for an image model"
    )
    p.add_argument("--top", type=int, default=3, help="how many labels to show per input (default 3)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best one found)")


def _predict(args: argparse.Namespace) -> None:
    from course_lib.deploy import print_predictions

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    print_predictions(args.model_dir, args.inputs, top=args.top, device=args.device)


def _chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="a name from course_lib.chat.CHAT_MODELS")
    p.add_argument("--prompt", default=None, help="answer this one message and exit (for scripts)")
    p.add_argument("--system", default=None, help="a system message that starts the conversation")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.2, help="0 = greedy; higher = more random")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling: smallest set with mass p")
    p.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="> 1 makes tokens already said less likely"
    )
    p.add_argument("--seed", type=int, default=None, help="fix the sampling (default: a fresh one)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")


def _chat(args: argparse.Namespace) -> int:
    from course_lib.chat import chat_main

    return chat_main(args)


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="a name from course_lib.chat.CHAT_MODELS")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")


def _serve(args: argparse.Namespace) -> int:
    from course_lib.serve import serve_main

    return serve_main(args)


# name -> (help, declare arguments, run); a new subcommand is one more row. A run returns None (success)
# or its own exit status.
SUBCOMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]
] = {
    "pretrain": ("train a GPT language model on a course corpus", _config_args, _train),
    "finetune": ("fine-tune a pretrained GPT as a text classifier", _config_args, _train),
    "generate": ("sample text from a pretrained checkpoint", _generate_args, _generate),
    "predict": ("classify texts or images with a model saved by course_lib.deploy", _predict_args, _predict),
    "chat": ("talk with a pretrained chat model (a REPL, or --prompt once)", _chat_args, _chat),
    "serve": ("serve a chat model over HTTP with an OpenAI-compatible API", _serve_args, _serve),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (helptext, declare, _) in SUBCOMMANDS.items():
        declare(sub.add_parser(name, help=helptext, description=helptext))
    return parser


EXIT_CODES = {  # what `python -m course_lib` returns (README: "Interruptions, errors and exit codes")
    0: "success",
    1: "the run failed: unreadable checkpoint or bundle, out_dir unusable or locked, NaN, out of memory",
    2: "bad command line or config: fix the option or key the message names",
    130: "Ctrl-C (SIGINT): a checkpoint was saved at the last full step; add --resume",
    143: "SIGTERM (preemption, docker stop): a checkpoint was saved; add --resume",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m course_lib`` and the ``course`` script; returns the exit status
    (:data:`EXIT_CODES`). Every expected failure is one ``error:`` line on stderr saying what to do."""
    import torch

    from course_lib.checkpoint import CheckpointError
    from course_lib.trainer import NonFiniteLossError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach for the network
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return SUBCOMMANDS[args.command][2](args) or 0
    except (ConfigError, CheckpointError, NonFiniteLossError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)  # OSError: missing files, read-only or full disks, bad images
        return 2 if isinstance(e, ConfigError) else 1
    except RuntimeError as e:
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise  # a bug: keep the traceback
        first = str(e).splitlines()[0][:200]
        print(
            f"error: out of memory ({first}); lower the batch size (train.batch_size, or fewer inputs for "
            "predict), use grad_accum_steps for the same effective batch, or a smaller model",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as e:
        print("interrupted; continue with the same command plus --resume", file=sys.stderr)
        return getattr(e, "exit_code", 130)


__all__ = ["EXIT_CODES", "SUBCOMMANDS", "build_parser", "main"]
