"""Stand-in `Run.roles` for unit tests of a stage: hands the stage the scripted generator and judge
it is given, whatever weights the stage names."""

from __future__ import annotations


class Roles:
    def __init__(self, generator, judge):
        self._generator, self._judge = generator, judge

    def generator(self, model_dir):
        return self._generator

    def judge(self, model_dir):
        return self._judge
