"""Negated, family-history and rule-out mentions the linker marks never become a question's
codes: neither in the fine-tuning data (`llm_adapter.data.link_questions`) nor in the gateway's
prefix (`serve.codes.CodeResolver.link`)."""

from types import SimpleNamespace

import qa.linker
from llm_adapter.data import link_questions
from qa.linker.pipeline import LinkedCode
from serve.codes import CodeResolver

TEXT = "No chest pain. Mother had breast cancer. Rule out pneumonia. Known type 2 diabetes."
LINKS = [LinkedCode(3, 13, "chest pain", "ICD10CM:R07.9", 0.9, status="negated"),
         LinkedCode(26, 39, "breast cancer", "ICD10CM:C50.919", 0.9, status="family"),
         LinkedCode(50, 59, "pneumonia", "ICD10CM:J18.9", 0.9, status="ruleout"),
         LinkedCode(67, 82, "type 2 diabetes", "ICD10CM:E11.9", 0.8, "Type 2 diabetes mellitus without complications")]


class StubLinker:
    def link(self, text):
        return list(LINKS)

    def link_batch(self, texts, progress=False):
        return [list(LINKS) for _ in texts]


def test_fine_tuning_questions_get_only_affirmed_codes(monkeypatch):
    monkeypatch.setattr(qa.linker.CodeLinker, "build", classmethod(lambda cls, *a, **k: StubLinker()))
    q = SimpleNamespace(question=TEXT, options=["A", "B"], codes=[])
    link_questions([q], progress=False)
    assert q.codes == ["ICD10CM:E11.9"]


def test_gateway_prefix_gets_only_affirmed_codes():
    resolver = CodeResolver(vocab=None, linker=StubLinker())
    assert [c.code_id for c in resolver.link(TEXT)] == ["ICD10CM:E11.9"]
