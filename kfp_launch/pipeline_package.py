"""Find, import and compile the user's ``<package>.<job>`` pipeline modules.

The only module besides ``local_worker.py`` and ``kfp_api.py`` that imports ``kfp``; it is imported
lazily by the CLI commands that need it, so ``kfp-launch --help`` never pays for ``import kfp``.

Facts used (kubeflow/pipelines sdk/python/kfp/dsl/graph_component.py (2.17.0); docs/kfp-backend-notes.md,
'Compiled pipelines and parameter types'): ``@dsl.pipeline`` yields a ``GraphComponent`` whose
``pipeline_func.__module__`` names the defining module; most user errors surface when the module is
imported (decoration time), not when it is compiled; the IR input definitions carry the parameter
types the API server validates against.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tempfile
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from kfp_launch.errors import JobNotFoundError, PipelineError
from kfp_launch.models import CompiledPipeline, ParameterType, PipelineParameter

_MAX_USER_FRAMES = 5


def list_job_modules(project_dir: Path, package: str) -> list[str]:
    """Return the candidate job names: modules of ``<project_dir>/<package>/`` not starting with ``_``.

    Args:
        project_dir: the user's project directory (holds the ``package`` directory).
        package: the pipelines package name, e.g. ``"pipelines"``.

    Returns:
        Sorted module names (without the package prefix); empty when the package is missing.
    """
    package_dir = project_dir / package
    if not package_dir.is_dir():
        return []
    names = (m.name for m in pkgutil.iter_modules([str(package_dir)]))
    return sorted(n for n in names if not n.startswith("_"))


def compile_job(job_spec: str, *, project_dir: Path, package: str) -> CompiledPipeline:
    """Import ``<package>.<job>``, pick its ``@dsl.pipeline`` and compile it.

    Args:
        job_spec: ``"JOB"`` or ``"JOB:function"`` (the latter picks one of several pipelines).
        project_dir: the user's project directory, put first on ``sys.path``.
        package: the pipelines package name.

    Returns:
        The compiled pipeline with its parameters and ``PROFILES``.

    Raises:
        JobNotFoundError: no such module (the message lists the jobs that exist).
        PipelineError: the module raises on import, defines no pipeline or several, the named
            function is not a pipeline, ``PROFILES`` is malformed, or compilation fails.
    """
    job, _, function = job_spec.partition(":")
    _check_job_name(job, job_spec, project_dir, package)
    module = import_job_module(job, project_dir=project_dir, package=package)
    name, pipeline = _select_pipeline(module, job, function or None)
    # JOB:function names its own job: two pipelines of one module get distinct runs, names and keys.
    return _compile(pipeline, job=job_spec if function else job, module=module, function=name)


def compile_job_pipelines(job: str, *, project_dir: Path, package: str) -> list[CompiledPipeline]:
    """Compile what ``kfp-launch jobs`` lists for one module: its ``pipeline``, its only pipeline,
    or, when it defines several and none is called ``pipeline``, each as ``job:function``.

    Returns:
        The compiled pipelines; empty when the module defines none (it is not a job).

    Raises:
        JobNotFoundError, PipelineError: as :func:`compile_job`.
    """
    _check_job_name(job, job, project_dir, package)
    module = import_job_module(job, project_dir=project_dir, package=package)
    found = _defined_pipelines(module)
    if "pipeline" in found:
        found = {"pipeline": found["pipeline"]}
    ambiguous = len(found) > 1
    return [
        _compile(p, job=f"{job}:{name}" if ambiguous else job, module=module, function=name)
        for name, p in sorted(found.items())
    ]


def import_job_module(job: str, *, project_dir: Path, package: str) -> ModuleType:
    """Import ``<package>.<job>`` from ``project_dir`` (fresh, so relative imports work).

    Raises:
        JobNotFoundError: the module does not exist.
        PipelineError: importing it raised; the message shows the user's own frames.
    """
    module_name = f"{package}.{job}"
    _prepare_import(project_dir, package)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # kfp's base_image notice, not the user's
            return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (package, module_name):
            raise _job_not_found(job, project_dir, package) from None
        raise _import_failed(module_name, exc, project_dir) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any error in user code is reported, not crashed on
        raise _import_failed(module_name, exc, project_dir) from None


def _check_job_name(job: str, job_spec: str, project_dir: Path, package: str) -> None:
    if not job or not job.isidentifier() or job.startswith("_"):
        raise JobNotFoundError(
            f'"{job_spec}" is not a job name: a job is a module {package}.<name> whose name is a Python '
            "identifier not starting with an underscore.",
            hint=_jobs_hint(project_dir, package),
        )


def _prepare_import(project_dir: Path, package: str) -> None:
    root = str(project_dir.resolve())
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    # A previous import may come from another project (tests, `jobs` across projects): start fresh.
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _job_not_found(job: str, project_dir: Path, package: str) -> JobNotFoundError:
    package_dir = project_dir / package
    if not package_dir.is_dir():
        return JobNotFoundError(
            f'No job "{job}": there is no "{package}" package in {project_dir}.',
            hint=f"run kfp-launch from your project's root, which holds {package}/<job>.py "
            "(or set --pipelines-package / KFP_LAUNCH_PIPELINES_PACKAGE).",
        )
    return JobNotFoundError(
        f'No job "{job}": there is no module {package}.{job} in {project_dir}.',
        hint=_jobs_hint(project_dir, package),
    )


def _jobs_hint(project_dir: Path, package: str) -> str:
    jobs = list_job_modules(project_dir, package)
    if not jobs:
        return f"no jobs found: add a module {package}/<job>.py that defines a @dsl.pipeline."
    return "jobs in this project: " + ", ".join(jobs) + "."


def _import_failed(module_name: str, exc: BaseException, project_dir: Path) -> PipelineError:
    frames = format_user_frames(exc, project_dir)
    detail = f"{type(exc).__name__}: {exc}"
    message = f"Importing {module_name} failed with {detail}"
    if frames:
        message += "\n" + frames
    hint = "fix the error in your pipeline module; nothing was run or submitted."
    if isinstance(exc, ModuleNotFoundError):
        hint = f'install the missing package "{exc.name}" in this environment, or fix the import.'
    return PipelineError(message, hint=hint)


def format_user_frames(exc: BaseException, project_dir: Path, limit: int = _MAX_USER_FRAMES) -> str:
    """Format the traceback frames of ``exc`` that lie in the user's project, innermost last.

    Args:
        exc: the exception raised by the user's module.
        project_dir: only frames of files below this directory (and not in a virtualenv) are kept.
        limit: the number of innermost frames kept.

    Returns:
        ``  File "pipelines/x.py", line 3, in <module>\\n    code`` lines; a ``SyntaxError`` shows its
        own location. Empty when no frame is the user's.
    """
    root = project_dir.resolve()
    lines: list[str] = []
    for frame in traceback.extract_tb(exc.__traceback__):
        rel = _relative_user_path(frame.filename, root)
        if rel is None:
            continue
        lines.append(f'  File "{rel}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    if isinstance(exc, SyntaxError) and exc.filename:
        rel = _relative_user_path(exc.filename, root) or exc.filename
        lines.append(f'  File "{rel}", line {exc.lineno}')
        if exc.text:
            lines.append(f"    {exc.text.strip()}")
    return "\n".join(lines[-2 * limit :])


def _relative_user_path(filename: str, root: Path) -> str | None:
    if filename.startswith("<") or not Path(filename).is_file():  # <frozen importlib._bootstrap> etc.
        return None
    try:
        rel = Path(filename).resolve().relative_to(root)
    except (ValueError, OSError):
        return None
    if any(part in ("site-packages", ".venv", "venv") for part in rel.parts):
        return None
    return str(rel)


def _defined_pipelines(module: ModuleType) -> dict[str, Any]:
    from kfp.dsl.graph_component import GraphComponent

    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, GraphComponent) and value.pipeline_func.__module__ == module.__name__
    }


def _select_pipeline(module: ModuleType, job: str, function: str | None) -> tuple[str, Any]:
    found = _defined_pipelines(module)
    if function is not None:
        return function, _named_pipeline(module, job, function, found)
    if "pipeline" in found:
        return "pipeline", found["pipeline"]
    if len(found) == 1:
        return next(iter(found.items()))
    if not found:
        raise PipelineError(
            f"{module.__name__} defines no @dsl.pipeline (pipelines it imports from elsewhere don't count).",
            hint=f"decorate the pipeline function in {module.__name__} with @dsl.pipeline.",
        )
    names = ", ".join(sorted(found))
    raise PipelineError(
        f"{module.__name__} defines several pipelines ({names}) and none is called `pipeline`.",
        hint=f"say which one to use, e.g. {job}:{min(found)}, or name one `pipeline`.",
    )


def _named_pipeline(module: ModuleType, job: str, function: str, found: Mapping[str, Any]) -> Any:
    if function in found:
        return found[function]
    if not hasattr(module, function):
        listed = ", ".join(sorted(found)) or "none"
        raise PipelineError(
            f"{module.__name__} has no attribute `{function}`.",
            hint=f"pipelines defined in {module.__name__}: {listed}.",
        )
    kind = type(getattr(module, function)).__name__
    raise PipelineError(
        f"{job}:{function} is not a pipeline: {module.__name__}.{function} is a {kind}, "
        "not a function decorated with @dsl.pipeline (defined in this module).",
        hint="decorate it with @dsl.pipeline, or name the pipeline function instead.",
    )


def _compile(pipeline: Any, *, job: str, module: ModuleType, function: str) -> CompiledPipeline:
    from kfp import compiler

    with tempfile.TemporaryDirectory(prefix="kfp-launch-") as tmp:
        path = Path(tmp) / "pipeline.yaml"
        try:
            compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))
        except Exception as exc:  # noqa: BLE001 - compiler errors are the user's pipeline errors
            raise PipelineError(
                f"Compiling {module.__name__}:{function} failed with {type(exc).__name__}: {exc}",
                hint="fix the pipeline definition; nothing was run or submitted.",
            ) from None
        package_yaml = path.read_text(encoding="utf-8")
    return CompiledPipeline(
        job=job,
        module=module.__name__,
        function=function,
        pipeline_name=pipeline.name,
        description=pipeline.description or "",
        package_yaml=package_yaml,
        parameters=read_parameters(pipeline),
        profiles=_read_profiles(module),
    )


def read_parameters(pipeline: Any) -> tuple[PipelineParameter, ...]:
    """Read a ``GraphComponent``'s input parameters: IR types, plain-Python defaults.

    The IR (``pipeline_spec.root.input_definitions``) gives the type and optionality the server
    checks; ``component_spec.inputs`` gives the signature order and the defaults as the user wrote
    them (the IR stores integers as doubles: docs/kfp-backend-notes.md, 'Compiled pipelines and parameter
    types').
    """
    from kfp.pipeline_spec import pipeline_spec_pb2

    enum = pipeline_spec_pb2.ParameterType.ParameterTypeEnum
    ir = pipeline.pipeline_spec.root.input_definitions.parameters
    params = []
    for name, spec in (pipeline.component_spec.inputs or {}).items():
        if name not in ir:  # an artifact input, not a parameter
            continue
        ir_spec = ir[name]
        params.append(
            PipelineParameter(
                name=name,
                type=ParameterType(enum.Name(ir_spec.parameter_type)),
                default=spec.default,
                has_default=ir_spec.HasField("default_value"),
                optional=bool(ir_spec.is_optional),
                description=spec.description or ir_spec.description or "",
            )
        )
    return tuple(params)


def _read_profiles(module: ModuleType) -> dict[str, dict[str, object]]:
    profiles = getattr(module, "PROFILES", None)
    if profiles is None:
        return {}
    valid = isinstance(profiles, Mapping) and all(
        isinstance(k, str) and isinstance(v, Mapping) and all(isinstance(p, str) for p in v)
        for k, v in profiles.items()
    )
    if not valid:
        raise PipelineError(
            f"{module.__name__}.PROFILES must be a dict of profile name -> dict of parameter values.",
            hint='e.g. PROFILES = {"toy": {"steps": 20}}',
        )
    return {name: dict(values) for name, values in profiles.items()}


def without_caching(package_yaml: str) -> str:
    """The pipeline package with execution caching off for every task: in the root DAG and in every
    component's DAG (conditions, loops, exit handlers, nested pipelines).

    The SDK's own override (``Client._create_job_config(enable_caching=False)``, ``kfp/client/client.py``)
    rewrites ``root.dag.tasks`` only, so tasks in sub-DAGs kept caching (kubeflow/pipelines#10287). A package
    of several YAML documents (a platform spec after the pipeline spec) keeps its other documents as they are.
    """
    import yaml

    documents = list(yaml.safe_load_all(package_yaml))
    spec = documents[0]
    dags = [spec.get("root", {}).get("dag", {})]
    dags += [component.get("dag", {}) for component in (spec.get("components") or {}).values()]
    for dag in dags:
        for task in (dag.get("tasks") or {}).values():
            task["cachingOptions"] = {"enableCache": False}
    return yaml.safe_dump_all(documents, sort_keys=False)


def packages_to_install(package_yaml: str) -> dict[str, list[list[str]]]:
    """Each executor's ``pip install`` commands (``packages_to_install`` and the ``kfp`` package its prologue
    installs), as their argument words (requirements and pip options), by executor.

    The SDK puts them in the container command's ``sh -c`` prologue as ``python3 -m pip install ... 'pkg'``
    commands joined by ``&&`` (``kfp/dsl/component_factory.py``, ``_get_packages_to_install_command``); this
    reads them back with ``shlex``.
    """
    import shlex

    import yaml

    spec = next(iter(yaml.safe_load_all(package_yaml)))
    executors = ((spec.get("deploymentSpec") or {}).get("executors")) or {}
    found: dict[str, list[list[str]]] = {}
    for name, executor in executors.items():
        command = ((executor.get("container") or {}).get("command")) or []
        script = command[2] if len(command) > 2 and command[:2] == ["sh", "-c"] else ""
        try:
            words = shlex.split(script)
        except ValueError:
            continue
        installs = _pip_installs(words)
        if installs:
            found[name] = installs
    return found


def _pip_installs(words: list[str]) -> list[list[str]]:
    installs: list[list[str]] = []
    for start in range(len(words) - 3):
        if words[start + 1 : start + 4] != ["-m", "pip", "install"]:
            continue
        arguments: list[str] = []
        for word in words[start + 4 :]:
            if word in ("&&", "||", ";"):
                break
            arguments.append(word)
        installs.append(arguments)
    return installs
