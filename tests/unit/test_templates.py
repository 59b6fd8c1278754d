import pytest

from slurmml.errors import SlurmmlError
from slurmml.launcher.templates import load_template, shipped_templates


def test_shipped_templates_include_default():
    assert "default" in shipped_templates()


def test_load_default_template_from_package_data():
    template = load_template("default")
    assert "export PYTHONUNBUFFERED=1" in template.setup
    assert all(not line.lstrip().startswith("#") for line in template.setup)


def test_empty_name_gives_empty_template():
    template = load_template(None)
    assert template.sbatch_options == {} and template.setup == []


def test_load_template_from_path(tmp_path):
    path = tmp_path / "site.sh"
    path.write_text("#!/bin/bash\n#SBATCH --qos=high\nmodule load cuda\n")
    template = load_template(str(path))
    assert template.sbatch_options == {"qos": "high"}
    assert template.setup == ["module load cuda"]


def test_error_in_path_template_names_the_file(tmp_path):
    path = tmp_path / "bad.sh"
    path.write_text("#SBATCH -q high\n")
    with pytest.raises(SlurmmlError, match=f"{path}:1"):
        load_template(str(path))


def test_missing_template_lists_shipped_ones():
    with pytest.raises(SlurmmlError) as info:
        load_template("no_such_template")
    message = str(info.value)
    assert "no_such_template" in message
    for name in shipped_templates():
        assert name in message
