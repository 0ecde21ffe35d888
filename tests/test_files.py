""" Names checked before they become paths (sp_timm.files). """
import pytest
import sp_timm  # noqa: F401  (registers the models)
from sp_timm.files import safe_path_component



def test_safe_path_component():
    assert safe_path_component('Author2026Title_WRN-28-10', 'x') == 'Author2026Title_WRN-28-10'
    for bad in ('../../tmp/x', '..', '.', '', 'a/b', 'a\\b', 'a\x00b', 7, 'x' * 201):
        with pytest.raises(ValueError, match='file name|string|characters'):
            safe_path_component(bad, 'leaderboard.dataset')


@pytest.mark.parametrize('text, public', [
    ('evaluated /home/ada/runs/wrn-sp/last on x', 'evaluated <local path>/last on x'),
    ('local-dir:/data/export/m', 'local-dir:<local path>/m'),
    ('file:///home/ada/cifar10 read', '<local path>/cifar10 read'),
    ('budget (0.5)/sqrt(d) and (>= 20)/few', 'budget (0.5)/sqrt(d) and (>= 20)/few'),  # ratios, not paths
    ('C:\\Users\\ada\\run', '<local path>/run'),
    ('hf-hub:org/name and 8/255', 'hf-hub:org/name and 8/255'),
])
def test_public_text_names_no_path_of_this_machine(text, public):
    from sp_timm.files import public_text
    assert public_text(text) == public
