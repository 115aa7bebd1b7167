"""The rules_proto symbols @bazel_tools loads, forwarded to Bazel's native rules."""

proto_lang_toolchain = native.proto_lang_toolchain
proto_library = native.proto_library
