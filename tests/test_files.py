""" Names checked before they become paths (sp_timm.files). """
import pytest
import sp_timm  # noqa: F401  (registers the models)
from sp_timm.files import safe_path_component



def test_safe_path_component():
    assert safe_path_component('Author2026Title_WRN-28-10', 'x') == 'Author2026Title_WRN-28-10'
    for bad in ('../../tmp/x', '..', '.', '', 'a/b', 'a\\b', 'a\x00b', 7, 'x' * 201):
        with pytest.raises(ValueError, match='file name|string|characters'):
            safe_path_component(bad, 'leaderboard.dataset')
