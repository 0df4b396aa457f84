"""Frozen entry point of the `predict` build's `fewshot`: the commands that run on
onnxruntime alone. That build has no PyTorch, so the others are refused with what to use
instead rather than failing on a missing module."""
import sys

TORCH_FREE = ("predict", "check")

if __name__ == "__main__":
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command is not None and command not in TORCH_FREE:
        print(f"error: this build of fewshot runs exported models only ({', '.join(TORCH_FREE)}); "
              f"'fewshot {command}' needs PyTorch: use the app build (make package) or "
              "`pip install fewshot-labeler`", file=sys.stderr)
        sys.exit(2)
    from engine.cli import main
    sys.exit(main())
