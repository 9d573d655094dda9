import backforth.hashset as hashset
from backforth.hashset import CompactSet


def test_membership_across_merges(monkeypatch):
    monkeypatch.setattr(hashset, "_MERGE_AT", 7)  # force many merges into the sorted array
    s = CompactSet()
    keys = [f"doc-{i}" for i in range(100)]
    for k in keys:
        s.add(k)
    assert s.add("doc-3") is False  # already there, whether recent or merged
    assert s.add("doc-new") is True and s.add("doc-new") is False
    keys.append("doc-new")
    assert len(s) == 101
    assert all(k in s for k in keys)
    assert "doc-100" not in s and "" not in s
    assert len(s._sorted) >= 98  # most members live in the compact array


def test_str_and_bytes_and_unicode():
    s = CompactSet(["héllo", b"raw", "\ud800x"])  # a lone surrogate must not crash the hash
    assert "héllo" in s and b"raw" in s and "\ud800x" in s
    assert "hello" not in s
