"""Frozen entry point of the `predict` build's `fewshot`: the commands that run on
onnxruntime alone. That build has no PyTorch, so the CLI refuses the others with what to
use instead rather than failing on a missing module (engine.cli.main)."""
import sys

if __name__ == "__main__":
    from engine.cli import main
    sys.exit(main(torch_available=False))
