# Bazel 4's built-in C++ rules under the names @rules_cc//cc:defs.bzl gives them.
# Debian's bazel-bootstrap 4.2 loads @rules_cc from the network, which CI does not reach, and
# Debian's bazel-rules-cc is too new for Bazel 4; this stand-in (ours) re-exports the natives.
cc_binary = native.cc_binary
cc_import = native.cc_import
cc_library = native.cc_library
cc_proto_library = native.cc_proto_library
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
fdo_prefetch_hints = native.fdo_prefetch_hints
fdo_profile = native.fdo_profile
objc_import = native.objc_import
objc_library = native.objc_library
