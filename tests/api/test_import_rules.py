"""The API never imports torch, diffusers or the worker package: proven with them unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run_python(code: str) -> None:
    """Run `code` in a fresh interpreter (nothing imported yet) and expect it to print ok."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_the_api_builds_and_serves_with_torch_diffusers_and_worker_unimportable(
    redis_url, tmp_path
):
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "diffusers", "transformers", "worker"):
                    raise ImportError(f"{{name}} must not be imported by the API")
        sys.meta_path.insert(0, Block())
        from api.app import create_app
        from schemas import Settings
        app = create_app(Settings(redis_url={redis_url!r}, data_dir={str(tmp_path)!r},
                                  default_model="tiny-random"))
        client = app.test_client()
        assert client.get("/v1/openapi.json").status_code == 200
        assert client.get("/v1/models").status_code == 200
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "worker")]
        assert not bad, bad
        print("ok")
        """
    )
    _run_python(code)


def test_the_render_engine_never_imports_celery_redis_or_boto3():
    code = textwrap.dedent(
        """
        import sys
        import worker.render
        bad = [m for m in sys.modules if m.split(".")[0] in ("celery", "redis", "boto3", "flask")]
        assert not bad, bad
        print("ok")
        """
    )
    _run_python(code)
