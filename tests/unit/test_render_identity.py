"""The offline render is what the stack asks for: a change to it must be deliberate.

tests/unit/data/render-digests.json holds the SHA-256 of every render file of every example stack
(dev, prod, gateway-api) in both ext_authz modes, as committed. A change to components/,
__main__.py or a Pulumi.<stack>.yaml that alters the render fails here, naming the files. When the
change is intended: review the render (`make render` before and after, `diff -ru`), then record it
with `make render-digests` and commit the digests with the change.
"""

from __future__ import annotations

from authproxy_local.render import digests


def test_every_example_render_matches_the_committed_digests() -> None:
    expected = digests.committed()
    assert set(expected) == {f"{s}-{m}" for s in digests.STACKS for m in ("extension-provider", "envoy-filter")}
    changed = digests.differences(expected, digests.digests())
    assert not changed, (
        f"the render changed: {changed}. If intended, review it and run `make render-digests`.")


def test_differences_names_each_changed_added_and_removed_file() -> None:
    old = {"dev-x": {"a.json": "1", "b.json": "2"}, "gone-x": {"c": "3"}}
    new = {"dev-x": {"a.json": "1", "b.json": "9", "d.yaml": "4"}}
    assert digests.differences(old, new) == ["dev-x/b.json", "dev-x/d.yaml", "gone-x/c"]
    assert digests.differences(new, new) == []
