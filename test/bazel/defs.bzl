"""A tree artifact producer: native genrule cannot declare a directory output."""

def _tree_impl(ctx):
    out = ctx.actions.declare_directory(ctx.attr.name)
    ctx.actions.run_shell(
        inputs = [ctx.file.src],
        outputs = [out],
        # Nested directories and an empty file exercise the whole Tree encoding.
        command = """
set -euo pipefail
mkdir -p "$2/a/b" "$2/c"
for i in 1 2 3 4 5; do sed "s/^/$i:/" "$1" > "$2/a/file_$i.txt"; done
cp "$1" "$2/a/b/copy.txt"
: > "$2/c/empty"
""",
        arguments = [ctx.file.src.path, out.path],
        mnemonic = "TreeGen",
        progress_message = "Generating tree %s" % out.short_path,
    )
    return [DefaultInfo(files = depset([out]))]

tree = rule(
    implementation = _tree_impl,
    attrs = {"src": attr.label(allow_single_file = True, mandatory = True)},
)
