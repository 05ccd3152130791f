"""Self-contained ``trust_remote_code`` export of a hazyzoo checkpoint.

A checkpoint written by ``save_pretrained`` loads only in a process that has imported hazyzoo
(the import registers the Auto classes). :func:`write_remote_code` makes it load anywhere
transformers is installed: it copies the modeling code into the checkpoint directory as a flat
bundle of modules and adds ``auto_map`` to ``config.json``, so that
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`` works without hazyzoo.

How the bundle is made, and why:

* The modules are found by walking the imports (every ``import``/``from ... import`` in the
  source, inside functions too) from the modules that define the config class and the model
  classes registered for it, so nothing here lists hazyzoo's modules by name. A package's
  ``__init__`` is included when it does more than carry a docstring, because Python runs it
  before any of its submodules.
* transformers copies a remote-code module and the files it reaches through same-folder
  relative imports (``from .x import y`` at the start of a line), so each module becomes one
  file ``<name>.py`` and every ``hazyzoo.*`` import is rewritten to that form. File names are the
  last part of the module name, lengthened with the parent parts where two would collide
  (``layers_linear_attention.py`` and ``kernels_linear_attention.py``).
* transformers' ``check_imports`` refuses to load a file that imports a package that is not
  installed, unless the import sits inside ``try``. Imports that only run on demand (inside a
  function, under an ``if``, or in a module that is itself only imported that way; e.g.
  ``triton``) are therefore wrapped in ``try: ... except ImportError: raise``, which changes
  nothing at run time. Packages the model needs unconditionally (torch, transformers, ...)
  stay required.
* A module that assigns ``_BUNDLED_CARD_TEMPLATES`` at top level (``hazyzoo.hub``) gets the
  model-card template of the model type written into it, so that ``save_pretrained`` of a
  remote-code model can still write its card without hazyzoo's ``hub_cards/`` folder.

Imports the walk cannot see (``importlib.import_module`` of a computed name) are not followed.
This module is bundled like any other when a model's ``save_pretrained`` reaches it; inside a
bundle it re-exports that bundle unchanged.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The package whose modules are bundled: ``hazyzoo``, or the dynamic package transformers made
# for a remote-code checkpoint when this file is itself part of a bundle.
_ROOT = __name__.rpartition(".")[0] or __name__
BUNDLE_HEADER = "# Bundled by hazyzoo.remote_code"
TEMPLATES_NAME = "_BUNDLED_CARD_TEMPLATES"
_MODULE_ALIAS = "_bundled_module_"


@dataclass
class _Module:
    name: str
    path: Path
    is_package: bool
    source: str
    tree: ast.Module
    required: bool = False
    flat: str = ""
    imports: list[_ImportSite] = field(default_factory=list)


@dataclass
class _Target:
    """One bundled module an import statement reaches."""

    module: str
    names: list[ast.alias]  # names imported from it (empty when the module object is bound)
    bound: str | None = None  # the name the module object is bound to, if that is imported


@dataclass
class _ImportSite:
    node: ast.Import | ast.ImportFrom
    conditional: bool  # inside a function, an ``if``/loop body, or a ``try``
    in_try: bool
    targets: list[_Target] = field(default_factory=list)
    external: str | None = None  # top-level package of an import from outside the bundle


def _root_of(name: str, roots: tuple[str, ...]) -> str | None:
    """The bundled package ``name`` lies in (or is), if any."""
    for root in roots:
        if name == root or name.startswith(root + "."):
            return root
    return None


def _is_bundle_file(path: str | Path) -> bool:
    try:
        with Path(path).open(encoding="utf-8") as f:
            return f.readline().startswith(BUNDLE_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def _entry_root(module_name: str) -> str | None:
    """The package to bundle a class of ``module_name`` from: hazyzoo (or, inside a bundle, this
    bundle's package), or the package of another loaded copy of a bundle (transformers loads
    the config and the model of one checkpoint into two packages)."""
    if _root_of(module_name, (_ROOT,)):
        return _ROOT
    module = sys.modules.get(module_name)
    if module is not None and _is_bundle_file(getattr(module, "__file__", "") or ""):
        return module_name.rpartition(".")[0]
    return None


def _spec(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, AttributeError, ValueError):
        return None


def _is_module(name: str, roots: tuple[str, ...]) -> bool:
    return _root_of(name, roots) is not None and _spec(name) is not None


def _load(name: str) -> _Module:
    spec = _spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"cannot bundle {name}: no Python source file found for it")
    path = Path(spec.origin)
    source = path.read_text(encoding="utf-8")
    return _Module(
        name=name,
        path=path,
        is_package=spec.submodule_search_locations is not None,
        source=source,
        tree=ast.parse(source, filename=str(path)),
    )


def _import_sites(tree: ast.Module) -> list[_ImportSite]:
    """Every import statement, with whether it runs unconditionally when the module loads."""
    sites: list[_ImportSite] = []

    def visit(node: ast.AST, conditional: bool, in_try: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            sites.append(_ImportSite(node, conditional, in_try))
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            conditional = True
        elif isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Match)):
            conditional = True
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            conditional, in_try = True, True
        for child in ast.iter_child_nodes(node):
            visit(child, conditional, in_try)

    visit(tree, False, False)
    return sites


def _package_of(module: _Module) -> str:
    return module.name if module.is_package else module.name.rpartition(".")[0]


def _where(module: _Module, node: ast.AST) -> str:
    return f"{module.path}:{getattr(node, 'lineno', '?')}"


def _resolve(module: _Module, site: _ImportSite, roots: tuple[str, ...]) -> None:
    """Fill ``site.targets`` (bundled modules it imports) or ``site.external``."""
    node = site.node
    if isinstance(node, ast.Import):
        for alias in node.names:
            if _root_of(alias.name, roots):
                if alias.asname is None or alias.name in roots:
                    raise ValueError(
                        f"{_where(module, node)}: `import {alias.name}` cannot be bundled; "
                        f"write `from {alias.name.rpartition('.')[0] or alias.name} import ...`"
                    )
                site.targets.append(_Target(alias.name, [], alias.asname))
            elif site.external is None:
                site.external = alias.name.split(".")[0]
        if site.targets and site.external:
            raise ValueError(f"{_where(module, node)}: split this import into one per line")
        return
    if node.level:
        base = importlib.util.resolve_name(
            "." * node.level + (node.module or ""), _package_of(module)
        )
    else:
        base = node.module or ""
    if not _root_of(base, roots):
        site.external = base.split(".")[0]
        return
    attributes: list[ast.alias] = []
    for alias in node.names:
        child = f"{base}.{alias.name}"
        if alias.name != "*" and _is_module(child, roots):
            site.targets.append(_Target(child, [], alias.asname or alias.name))
        elif base in roots:
            raise ValueError(
                f"{_where(module, node)}: `from {base} import {alias.name}` cannot be bundled "
                f"(the package's __init__ registers everything); import it from the module "
                "that defines it"
            )
        else:
            attributes.append(alias)
    if attributes:
        site.targets.append(_Target(base, attributes))


def _is_trivial_package(module: _Module) -> bool:
    """A package ``__init__`` with nothing but a docstring, ``__all__`` and future imports."""
    for i, stmt in enumerate(module.tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            continue
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if all(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                continue
        if isinstance(stmt, ast.Pass):
            continue
        return False
    return True


def _relative(name: str, roots: tuple[str, ...]) -> list[str]:
    root = _root_of(name, roots) or ""
    return name[len(root) + 1 :].split(".")


def _ancestors(name: str, roots: tuple[str, ...]) -> list[str]:
    """Packages Python initialises before module ``name`` (below its root package)."""
    root = _root_of(name, roots) or ""
    parts = _relative(name, roots)
    return [".".join([root, *parts[:i]]) for i in range(1, len(parts))]


class _Bundle:
    """The modules a set of entry modules reach, read, resolved and named."""

    def __init__(self, entries: list[str], roots: tuple[str, ...]) -> None:
        self.roots = roots
        self.modules: dict[str, _Module] = {}
        self._trivial: dict[str, bool] = {}
        queue = list(entries)
        while queue:
            name = queue.pop()
            if name in self.modules:
                continue
            module = _load(name)
            self.modules[name] = module
            module.imports = _import_sites(module.tree)
            for site in module.imports:
                _resolve(module, site, roots)
                for target in site.targets:
                    queue.extend(self.executed(target.module))
            queue.extend(self.executed(name)[:-1])
        self._mark_required(entries)
        self._name_files()
        self.required_packages = {
            site.external
            for module in self.modules.values()
            if module.required
            for site in module.imports
            if site.external and not site.conditional
        }

    def executed(self, name: str) -> list[str]:
        """Modules Python runs to import ``name``: its non-trivial packages, then itself."""
        out = []
        for package in _ancestors(name, self.roots):
            if package not in self._trivial:
                self._trivial[package] = _is_trivial_package(_load(package))
            if not self._trivial[package]:
                out.append(package)
        return [*out, name]

    def _mark_required(self, entries: list[str]) -> None:
        queue = list(entries)
        while queue:
            module = self.modules[queue.pop()]
            if module.required:
                continue
            module.required = True
            for site in module.imports:
                if not site.conditional:
                    for target in site.targets:
                        queue.extend(self.executed(target.module))

    def _name_files(self) -> None:
        # Modules at the same place in two roots (two loaded copies of one bundle) share a name.
        parts = {tuple(_relative(name, self.roots)) for name in self.modules}
        depth = dict.fromkeys(parts, 1)
        while True:
            flat = {p: "_".join(p[-depth[p] :]) for p in parts}
            seen: dict[str, list[str]] = {}
            for name, value in flat.items():
                seen.setdefault(value, []).append(name)
            clashes = [names for names in seen.values() if len(names) > 1]
            if not clashes:
                break
            for names in clashes:
                for p in names:
                    if depth[p] == len(p):
                        raise ValueError(f"cannot give {sorted(names)} distinct bundle file names")
                    depth[p] += 1
        for name, module in self.modules.items():
            module.flat = flat[tuple(_relative(name, self.roots))]


def _span(node: ast.AST) -> tuple[int, int, int, int]:
    return node.lineno, node.col_offset, node.end_lineno or node.lineno, node.end_col_offset or 0


def _import_lines(
    module: _Module, site: _ImportSite, bundle: _Bundle, initialised: set[str]
) -> list[str]:
    """Same-folder relative imports replacing an import of bundled modules.

    ``initialised`` holds the packages an earlier unconditional import of this module already
    initialised; it is updated.
    """
    lines: list[str] = []
    for target in site.targets:
        for package in bundle.executed(target.module)[:-1]:
            if package not in initialised:  # Python runs the package's __init__ first
                flat = bundle.modules[package].flat
                lines.append(f"from .{flat} import __name__ as {_MODULE_ALIAS}{flat}")
                if not site.conditional:
                    initialised.add(package)
        flat = bundle.modules[target.module].flat
        if target.bound is not None:
            # transformers copies only files named in `from .x import y` lines.
            companion = f"from .{flat} import __name__ as {_MODULE_ALIAS}{flat}"
            if companion not in module.source:  # (a bundle being bundled again has it)
                lines.append(companion)
            alias = "" if target.bound == flat else f" as {target.bound}"
            lines.append(f"from . import {flat}{alias}")
        else:
            names = ", ".join(
                alias.name + (f" as {alias.asname}" if alias.asname else "")
                for alias in target.names
            )
            lines.append(f"from .{flat} import {names}")
    return lines


def _optional_lines(module: _Module, node: ast.AST) -> list[str]:
    """The import statement inside ``try: ... except ImportError: raise`` (a no-op wrapper)."""
    segment = ast.get_source_segment(module.source, node) or ""
    return [
        "try:  # optional dependency; transformers' check_imports skips imports inside `try`",
        *("    " + line for line in segment.splitlines()),
        "except ImportError:",
        "    raise",
    ]


def _template_edit(module: _Module, templates: dict[str, str]) -> list[tuple]:
    for stmt in module.tree.body:
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, ast.AnnAssign):
            targets = [stmt.target]
        else:
            continue
        if stmt.value is not None and any(
            isinstance(t, ast.Name) and t.id == TEMPLATES_NAME for t in targets
        ):
            return [(*_span(stmt.value), repr(dict(sorted(templates.items()))))]
    return []


def _rewrite(module: _Module, bundle: _Bundle, templates: dict[str, str]) -> str:
    """The source of ``module`` as a bundle file (see the module docstring)."""
    keep = set(sys.stdlib_module_names) | bundle.required_packages
    edits: list[tuple] = []
    initialised = {module.name, *_ancestors(module.name, bundle.roots)}
    for site in module.imports:
        if site.targets:
            lines = _import_lines(module, site, bundle, initialised)
            edits.append((*_span(site.node), lines))
        elif site.external and not site.in_try and site.external not in keep:
            edits.append((*_span(site.node), _optional_lines(module, site.node)))
    if templates:
        edits.extend(_template_edit(module, templates))

    raw = [line.encode("utf-8") for line in module.source.splitlines(keepends=True)]
    for start_line, start_col, end_line, end_col, new in sorted(edits, reverse=True):
        prefix = raw[start_line - 1][:start_col].decode("utf-8")
        suffix = raw[end_line - 1][end_col:].decode("utf-8")
        if isinstance(new, str):  # an expression replaced in place
            text = prefix + new + suffix
        else:  # whole statements, each starting a line (transformers matches line starts)
            tail = suffix.rstrip("\r\n")
            if prefix.strip() or (tail.strip() and not tail.lstrip().startswith("#")):
                raise ValueError(
                    f"{module.path}:{start_line}: put this import statement on lines of its "
                    "own so that it can be bundled"
                )
            body = [prefix + line for line in new]
            body[-1] += tail
            text = "\n".join(body) + (suffix[len(tail) :] or "\n")
        raw[start_line - 1 : end_line] = [text.encode("utf-8")]
    source = b"".join(raw).decode("utf-8")
    if not source.startswith(BUNDLE_HEADER):
        source = (
            f"{BUNDLE_HEADER} from {module.name}: load it with transformers' "
            "trust_remote_code=True; edit hazyzoo, not this copy.\n" + source
        )
    return source


def registered_auto_classes(config_class: type) -> dict[str, type]:
    """The classes transformers' Auto classes hold for ``config_class``: ``{"AutoConfig":
    config_class, "AutoModel": ..., "AutoModelForCausalLM": ...}`` (whatever is registered)."""
    from transformers.models.auto import modeling_auto as auto
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    found: dict[str, type] = {"AutoConfig": config_class}
    for name in sorted(dir(auto)):
        auto_class = getattr(auto, name)
        if not (isinstance(auto_class, type) and issubclass(auto_class, _BaseAutoModelClass)):
            continue
        mapping = getattr(auto_class, "_model_mapping", None)
        if mapping is None or auto_class is _BaseAutoModelClass:
            continue
        try:
            model_class = mapping[config_class] if config_class in mapping else None
        except (KeyError, ValueError, ImportError):
            model_class = None
        if isinstance(model_class, type) and _entry_root(model_class.__module__):
            found[name] = model_class
    return found


def _config_of(model_or_config: Any) -> Any:
    from transformers import PreTrainedConfig

    if isinstance(model_or_config, PreTrainedConfig):
        return model_or_config
    config = getattr(model_or_config, "config", None)
    if not isinstance(config, PreTrainedConfig):
        raise TypeError(
            "write_remote_code needs a hazyzoo model or config, got "
            f"{type(model_or_config).__name__}"
        )
    return config


def _check_model_classes(model: Any, bundle: _Bundle) -> None:
    """Raise ``ValueError`` when ``model`` holds a module whose class the bundle cannot build:
    one defined outside hazyzoo in a package the bundled code never imports (a mixer
    registered from a user's script, a peft wrapper, ...)."""
    modules = getattr(model, "modules", None)
    if modules is None:
        return
    packages = {site.external for m in bundle.modules.values() for site in m.imports}
    for cls in sorted({type(m) for m in modules()}, key=lambda c: c.__qualname__):
        where = cls.__module__
        if _root_of(where, bundle.roots):
            if where not in bundle.modules:
                raise ValueError(
                    f"the model uses {cls.__qualname__} from {where}, which no bundled module "
                    "imports (is it only loaded by name?)"
                )
        elif where.partition(".")[0] not in packages:
            raise ValueError(
                f"the model uses {cls.__qualname__} from {where}, outside {_ROOT}: the "
                "remote-code bundle cannot carry it (define it in hazyzoo, or merge/unwrap it)"
            )


def _hub() -> Any:
    try:
        from hazyzoo import hub
    except ImportError:  # a bundle without the card code
        return None
    return hub


def _card_templates(config: Any) -> dict[str, str]:
    hub = _hub()
    if hub is None:
        return {}
    settings = hub.CARD_SETTINGS.get(getattr(config, "model_type", None))
    if settings is None:
        return {}
    return {settings["template"]: hub.card_template_text(settings["template"])}


@dataclass
class RemoteCodeBundle:
    """What :func:`write_remote_code` writes: file name -> source, and the ``auto_map``."""

    files: dict[str, str]
    auto_map: dict[str, str]
    modules: dict[str, str]  # file name -> the module it was made from


def build_remote_code(
    model_or_config: Any, existing_auto_map: dict | None = None
) -> RemoteCodeBundle:
    """Collect and rewrite the modules a model needs (see the module docstring); no writing.

    ``existing_auto_map`` (a checkpoint's current ``auto_map``) keeps entries whose class is in
    the bundle; it matters when a remote-code model (which transformers registers only under
    the Auto class it was loaded with) exports its own bundle again.
    """
    config = _config_of(model_or_config)
    classes = registered_auto_classes(type(config))
    auto_class = getattr(model_or_config, "_auto_class", None)
    if model_or_config is not config and auto_class and auto_class not in classes:
        classes[auto_class] = type(model_or_config)
    roots = [_entry_root(cls.__module__) for cls in classes.values()]
    for cls, root in zip(classes.values(), roots):
        if root is None:
            raise ValueError(
                f"{cls.__name__} is defined in {cls.__module__}, outside {_ROOT}: only {_ROOT} "
                "models can be bundled"
            )
    bundle = _Bundle(
        sorted({cls.__module__ for cls in classes.values()}),
        tuple(sorted(set(roots), key=len, reverse=True)),
    )
    if model_or_config is not config:
        _check_model_classes(model_or_config, bundle)
    templates = _card_templates(config)
    files: dict[str, str] = {}
    modules: dict[str, str] = {}
    for module in sorted(bundle.modules.values(), key=lambda m: m.name):
        name = f"{module.flat}.py"
        source = _rewrite(module, bundle, templates)
        if files.setdefault(name, source) != source:
            raise ValueError(f"two different modules would be bundled as {name}")
        modules.setdefault(name, module.name)
    auto_map = {
        name: f"{bundle.modules[cls.__module__].flat}.{cls.__name__}"
        for name, cls in classes.items()
    }
    flat_names = {module.flat: module for module in bundle.modules.values()}
    for name, reference in (existing_auto_map or {}).items():
        if name in auto_map or not isinstance(reference, str) or reference.count(".") != 1:
            continue
        flat, class_name = reference.split(".")
        if flat in flat_names and any(
            isinstance(stmt, ast.ClassDef) and stmt.name == class_name
            for stmt in flat_names[flat].tree.body
        ):
            auto_map[name] = reference
    return RemoteCodeBundle(files=files, auto_map=dict(sorted(auto_map.items())), modules=modules)


def write_remote_code(save_directory: str | Path, model_or_config: Any) -> list[Path]:
    """Make the checkpoint in ``save_directory`` loadable with ``trust_remote_code=True``.

    Writes the modeling code of ``model_or_config`` (a hazyzoo model or config) into the
    directory as a flat bundle of ``.py`` files, removes files of an earlier bundle that the new
    one no longer has, and adds ``auto_map`` to ``config.json`` (written first from the config
    when absent). A hazyzoo-written model card is rewritten so that its usage snippet shows
    remote-code loading. Returns the paths of the files written (bundle files, then
    ``config.json``).
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    directory = Path(save_directory)
    config = _config_of(model_or_config)
    config_path = directory / "config.json"

    def read_config() -> dict[str, Any]:
        try:
            loaded = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{config_path} is not valid JSON: {err}") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_path} must hold a JSON object")
        return loaded

    existing = read_config() if config_path.is_file() else {}
    bundle = build_remote_code(model_or_config, existing.get("auto_map"))
    foreign = [
        name
        for name in sorted(bundle.files)
        if (directory / name).exists() and not _is_bundle_file(directory / name)
    ]
    if foreign:
        raise FileExistsError(
            f"{directory} has files the bundle would replace that it did not write: {foreign}"
        )
    if not config_path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(directory)
    config_dict = read_config()
    written: list[Path] = []
    for stale in sorted(directory.glob("*.py")):
        if stale.name not in bundle.files and _is_bundle_file(stale):
            stale.unlink()
    for name, source in sorted(bundle.files.items()):
        path = directory / name
        path.write_text(source, encoding="utf-8")
        written.append(path)
    # What transformers will copy from each entry module must be exactly what was written.
    for reference in bundle.auto_map.values():
        entry = directory / (reference.split(".")[0] + ".py")
        missing = [f for f in get_relative_import_files(entry) if not Path(f).is_file()]
        if missing:
            raise RuntimeError(f"bundle entry {entry.name} refers to missing files {missing}")
    config_dict["auto_map"] = bundle.auto_map
    config_path.write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n", "utf-8")
    written.append(config_path)
    _refresh_card(directory)
    return written


def _refresh_card(directory: Path) -> None:
    hub = _hub()
    readme = directory / "README.md"
    if hub is None or not readme.is_file() or not any(directory.glob("*.safetensors")):
        return
    if hub.is_hazyzoo_card(readme):
        hub.write_model_card(directory)
