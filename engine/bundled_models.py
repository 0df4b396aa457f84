"""The models that ship with the app, by name: torch-free, so the window can list them
without loading the engine (engine.model_store loads them)."""
from __future__ import annotations

# name -> (short label for menus, one-line description for `fewshot info` and tooltips)
BUNDLED: dict[str, tuple[str, str]] = {
    "omniglot": ("Omniglot characters (Conv4, 28 px)",
                 "ProtoNet + Conv4 meta-trained on Omniglot (handwritten characters, 28 px)"),
    "photos": ("Photos (EfficientNet-Lite0, 224 px)",
               "ProtoNet head on pretrained EfficientNet-Lite0 (photos, 224 px)"),
    "omniglot-maml": ("Omniglot characters, adapts its network (Proto-MAML, Conv4, 28 px)",
                      "Proto-MAML + Conv4 meta-trained on Omniglot (characters, 28 px; adapts the whole network)"),
}
