"""The program under Pulumi's mocks: what `pulumi up` would ask for, as reviewable files.

- :mod:`.mockrun`: runs ``__main__.py`` under the mock runtime and records every registration;
- :mod:`.offline`: the render (placeholders for secrets, leak checks, deterministic files);
- :mod:`.placeholders`: the placeholder grammar; :mod:`.digests`: the render identity check;
- :mod:`.scaling`: program run time for N generated apps.

Imports: ``components.config``, ``pulumi``, :mod:`authproxy_local.core`; nothing above them.
"""

from .mockrun import deep_merge, project_config
from .offline import (
    MODES,
    RenderError,
    RenderResult,
    default_out_dir,
    dump_json,
    dump_yaml,
    dump_yaml_all,
    render,
    stack_values,
    write,
)

__all__ = [
    "MODES",
    "RenderError",
    "RenderResult",
    "deep_merge",
    "default_out_dir",
    "dump_json",
    "dump_yaml",
    "dump_yaml_all",
    "project_config",
    "render",
    "stack_values",
    "write",
]
