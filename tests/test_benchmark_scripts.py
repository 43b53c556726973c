r"""The scripts in benchmarks/ are not imported by the test suite; this at
least compiles every one of them, so a syntax error cannot hide there."""
import os
import py_compile

import pytest

from conftest import REPO

SCRIPTS = sorted(
    f for f in os.listdir(os.path.join(REPO, 'benchmarks')) if f.endswith('.py'))


@pytest.mark.parametrize('name', SCRIPTS)
def test_benchmark_script_compiles(name, tmp_path):
    py_compile.compile(os.path.join(REPO, 'benchmarks', name),
                       cfile=str(tmp_path / (name + 'c')), doraise=True)
