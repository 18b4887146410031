"""Builds consent_registry with its gRPC stubs generated from the project's
proto/ by protoc and grpc_python_plugin (Debian: protobuf-compiler,
protobuf-compiler-grpc) at build time, so the stubs always match the API
they were built with. Everything else is in pyproject.toml.

The generated modules land in consent_registry/_proto/, with their imports
rewritten to that package ("from consent.v1 import ..." becomes
"from consent_registry._proto.consent.v1 import ..."), so they never clash
with another package's top-level "google" or "consent".

Environment: CONSENT_PROTO_DIR (default: ../../proto from this file),
PROTOC (default: protoc on PATH), GRPC_PYTHON_PLUGIN (default:
grpc_python_plugin on PATH).
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "consent_registry._proto"


def find_tool(env, name, package):
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        raise SystemExit(
            "consent-registry: %s not found: install Debian's %s (or set %s)" % (name, package, env))
    return path


def generate(out_dir):
    proto_dir = os.environ.get("CONSENT_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto")
    proto_dir = os.path.abspath(proto_dir)
    protos = sorted(
        os.path.relpath(p, proto_dir)
        for p in glob.glob(os.path.join(proto_dir, "**", "*.proto"), recursive=True))
    if not protos:
        raise SystemExit("consent-registry: no .proto files under %s (set CONSENT_PROTO_DIR)" %
                         proto_dir)
    protoc = find_tool("PROTOC", "protoc", "protobuf-compiler")
    plugin = find_tool("GRPC_PYTHON_PLUGIN", "grpc_python_plugin", "protobuf-compiler-grpc")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([protoc, "-I" + proto_dir, "--python_out=" + tmp,
                        "--grpc_python_out=" + tmp,
                        "--plugin=protoc-gen-grpc_python=" + plugin] + protos,
                       check=True)
        # The packages generated here (consent.v1, google.rpc); the runtime's
        # own (google.protobuf) stay as they are.
        packages = sorted({os.path.dirname(p).replace("/", ".") for p in protos})
        pattern = re.compile(r"^from (%s) import " % "|".join(map(re.escape, packages)),
                             re.MULTILINE)
        shutil.rmtree(out_dir, ignore_errors=True)
        for path in glob.glob(os.path.join(tmp, "**", "*.py"), recursive=True):
            rel = os.path.relpath(path, tmp)
            with open(path) as f:
                code = pattern.sub(lambda m: "from %s.%s import " % (PACKAGE, m.group(1)),
                                   f.read())
            target = os.path.join(out_dir, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(code)
        for dirpath, _, _ in os.walk(out_dir):
            init = os.path.join(dirpath, "__init__.py")
            if not os.path.exists(init):
                open(init, "w").close()


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        generate(os.path.join(self.build_lib, *PACKAGE.split(".")))


setup(cmdclass={"build_py": BuildPyWithStubs})
