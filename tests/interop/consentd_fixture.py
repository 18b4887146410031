"""Shared by the Python tests: stubs generated from proto/ and a real consentd
process on loopback."""
import argparse
import glob
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

COMMON_FLAGS = ("--consentd", "--policy", "--proto_root", "--protoc", "--grpc_python_plugin")


def generate_stubs(args, out_dir):
    """Generates Python stubs for every .proto under args.proto_root into
    out_dir and puts them on sys.path."""
    protos = sorted(
        os.path.relpath(p, args.proto_root)
        for p in glob.glob(os.path.join(args.proto_root, "**", "*.proto"), recursive=True))
    subprocess.run(
        [args.protoc, "-I" + args.proto_root, "--python_out=" + out_dir,
         "--grpc_python_out=" + out_dir,
         "--plugin=protoc-gen-grpc_python=" + args.grpc_python_plugin] + protos,
        check=True)
    sys.path.insert(0, out_dir)


class Consentd:
    """consentd on loopback with a given data directory; metrics off unless
    extra_args turn them on. Its stderr goes to data_dir + ".log"."""

    def __init__(self, args, data_dir, extra_args=()):
        self.data_dir = data_dir
        self.log_path = data_dir + ".log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [args.consentd, "--listen=127.0.0.1:0", "--metrics_listen=",
             "--data_dir=" + data_dir, "--policy=" + args.policy] + list(extra_args),
            stdout=subprocess.PIPE, stderr=self.log)
        deadline = time.monotonic() + 30
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [],
                                        max(0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError("consentd did not start in time")
            chunk = self.proc.stdout.read1(256)
            if not chunk:
                raise RuntimeError("consentd exited: %s" % open(self.log_path).read())
            line += chunk
        assert line.startswith(b"consentd listening on "), line
        self.address = line.split()[-1].decode()

    def metrics_address(self):
        """host:port of /metrics, from the start-up log line."""
        with open(self.log_path) as log:
            for line in log:
                if "metrics endpoint ready" in line:
                    return line.split("http://", 1)[1].split("/metrics", 1)[0]
        raise RuntimeError("consentd did not log a metrics endpoint")

    def stop(self, sig):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.log.close()
        return code


def run_tests(set_args, extra_flags=()):
    """The main of a Python test: parses COMMON_FLAGS and `extra_flags`
    (all required), hands them to set_args, generates the stubs, runs the
    __main__ module's tests and exits (non-zero on failure or no tests)."""
    parser = argparse.ArgumentParser()
    for flag in COMMON_FLAGS + tuple(extra_flags):
        parser.add_argument(flag, required=True)
    args, rest = parser.parse_known_args()
    set_args(args)
    stubs = tempfile.mkdtemp(prefix="consent-stubs-")
    try:
        generate_stubs(args, stubs)
        result = unittest.main(module="__main__", argv=[sys.argv[0]] + rest, exit=False,
                               verbosity=2).result
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
    sys.exit(0 if result.wasSuccessful() and result.testsRun > 0 else 1)
