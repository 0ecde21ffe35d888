""" Export: timm's Hub format with a model card (``hub``, ``card``), the RobustBench submission (``robustbench``), both
through one export-folder transaction (``folder``). The names below load their modules on first use. """
from .._lazy import lazy_attributes

_NAMES = {
    **dict.fromkeys(('export_model', 'push_folder', 'read_report', 'check_one_report_per_threat_model'), 'hub'),
    **dict.fromkeys(('render_model_card', 'train_config', 'train_args_yaml', 'TRAIN_ARGS_FILE'), 'card'),
    **dict.fromkeys(('EXPORT_MARKER', 'export_folder', 'export_destination', 'check_replaceable'), 'folder'),
    **dict.fromkeys(('export_robustbench', 'robustbench_state_dict', 'submission_name'), 'robustbench'),
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
