"""Auto classes for the heads that transformers has no Auto class for: `AutoModelForCompression`.

Built like transformers' own AutoModelFor* classes (a `_BaseAutoModelClass` over a `_LazyAutoMapping`), with an
empty name table: the H-LRU and BD-LRU classes are added with `register()` when hf_lrnn is imported. So

    hf_lrnn.AutoModelForCompression.from_pretrained(folder)                          # installed code
    hf_lrnn.AutoModelForCompression.from_pretrained(folder, trust_remote_code=True)  # the folder's own code

where the second resolves like every Auto class: `config.auto_map[cls.__name__]`, here
`config.auto_map["AutoModelForCompression"]` = "modeling_hlru.HLRUForCompression" (resp. BD-LRU), which
`save_pretrained` of a compression model writes. Without hf_lrnn installed, the same class is the four lines

    from collections import OrderedDict
    from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    class AutoModelForCompression(_BaseAutoModelClass):
        _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())

and `AutoModelForCompression.from_pretrained(folder, trust_remote_code=True)` loads the folder's code.
"""

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping, auto_class_update
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

# model_type -> class name inside transformers.models: none; hf_lrnn's classes are registered (hf_lrnn/__init__.py)
MODEL_FOR_COMPRESSION_MAPPING_NAMES = OrderedDict()
MODEL_FOR_COMPRESSION_MAPPING = _LazyAutoMapping(CONFIG_MAPPING_NAMES, MODEL_FOR_COMPRESSION_MAPPING_NAMES)


class AutoModelForCompression(_BaseAutoModelClass):
    _model_mapping = MODEL_FOR_COMPRESSION_MAPPING


AutoModelForCompression = auto_class_update(
    AutoModelForCompression, checkpoint_for_example="my-bdlru", head_doc="sequence compression (MAD auto-encoder)"
)

__all__ = ["AutoModelForCompression", "MODEL_FOR_COMPRESSION_MAPPING"]
