//! Every C export goes through the boundary in `src/ffi.rs`: its body is one
//! call of `ffi::call`, `ffi::call_value` or `ffi::call_void`, so no export
//! can let a panic unwind into C or skip the argument checks, with at most
//! one `unsafe` block (clippy's undocumented_unsafe_blocks makes it carry
//! its SAFETY line). The exports
//! found in the sources must be exactly the functions of `include/keel.h`,
//! so an export this scan cannot see (one made by a macro, say) fails too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The boundary functions an export's body may consist of.
const BOUNDARY: [&str; 3] = ["call", "call_value", "call_void"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `func` is declared for C: `extern "C"` or `#[no_mangle]`.
fn is_export(func: &syn::ItemFn) -> bool {
    let extern_c = func
        .sig
        .abi
        .as_ref()
        .is_some_and(|abi| abi.name.as_ref().is_none_or(|name| name.value() == "C"));
    let no_mangle = func.attrs.iter().any(|attr| attr.path().is_ident("no_mangle"));
    extern_c || no_mangle
}

/// Whether `expr` is `ffi::<boundary>(closure)`.
fn is_boundary_call(expr: &syn::Expr) -> bool {
    let syn::Expr::Call(call) = expr else { return false };
    let syn::Expr::Path(path) = &*call.func else {
        return false;
    };
    let segments: Vec<String> = path.path.segments.iter().map(|s| s.ident.to_string()).collect();
    let is_boundary = segments.len() == 2 && segments[0] == "ffi" && BOUNDARY.contains(&segments[1].as_str());
    is_boundary && call.args.len() == 1 && matches!(call.args[0], syn::Expr::Closure(_))
}

/// Counts the `unsafe` blocks of a body.
#[derive(Default)]
struct UnsafeBlocks(usize);

impl<'ast> syn::visit::Visit<'ast> for UnsafeBlocks {
    fn visit_expr_unsafe(&mut self, block: &'ast syn::ExprUnsafe) {
        self.0 += 1;
        syn::visit::visit_expr_unsafe(self, block);
    }
}

/// Whether the body of `func` is exactly one boundary call, with at most
/// one `unsafe` block (the one its SAFETY line explains).
fn goes_through_boundary(func: &syn::ItemFn) -> bool {
    let mut blocks = UnsafeBlocks::default();
    syn::visit::Visit::visit_block(&mut blocks, &func.block);
    let one_call = match func.block.stmts.as_slice() {
        [syn::Stmt::Expr(expr, _)] => is_boundary_call(expr),
        _ => false,
    };
    one_call && blocks.0 <= 1
}

/// Every export in `items` (and inline modules), with whether it is wrapped.
fn exports(items: &[syn::Item], found: &mut Vec<(String, bool)>) {
    for item in items {
        match item {
            syn::Item::Fn(func) if is_export(func) => {
                found.push((func.sig.ident.to_string(), goes_through_boundary(func)));
            }
            syn::Item::Mod(module) => {
                if let Some((_, items)) = &module.content {
                    exports(items, found);
                }
            }
            _ => {}
        }
    }
}

fn source_exports(dir: &Path) -> Vec<(String, bool)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let mut found = Vec::new();
    for file in files {
        if file.is_dir() {
            found.extend(source_exports(&file));
        } else if file.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&file).unwrap();
            let parsed = syn::parse_file(&text).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
            exports(&parsed.items, &mut found);
        }
    }
    found
}

/// The functions `keel.h` declares: `<type> keel_name(` at the start of a line.
fn header_functions(header: &str) -> BTreeSet<String> {
    header
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with("typedef") && !line.starts_with('#'))
        .filter_map(|line| {
            let open = line.find('(')?;
            let name = line[..open].rsplit([' ', '*']).next()?;
            name.starts_with("keel_").then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn every_export_goes_through_the_boundary() {
    let found = source_exports(&crate_dir().join("src"));
    assert!(found.len() > 50, "the scan found only {} exports", found.len());
    let bypassing: Vec<&str> = found
        .iter()
        .filter(|(_, wrapped)| !wrapped)
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        bypassing.is_empty(),
        "these exports are not one ffi::call/call_value/call_void with at most one unsafe block: {bypassing:?}"
    );
}

#[test]
fn the_scan_sees_exactly_the_headers_functions() {
    let header = std::fs::read_to_string(crate_dir().join("../../include/keel.h")).unwrap();
    let declared = header_functions(&header);
    let found: BTreeSet<String> = source_exports(&crate_dir().join("src"))
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(
        declared.len() > 50,
        "parsed only {} functions from keel.h",
        declared.len()
    );
    let missing_from_scan: Vec<_> = declared.difference(&found).collect();
    let missing_from_header: Vec<_> = found.difference(&declared).collect();
    assert!(
        missing_from_scan.is_empty() && missing_from_header.is_empty(),
        "keel.h and the sources disagree (run scripts/header?): only in keel.h {missing_from_scan:?}, \
         only in the sources {missing_from_header:?}"
    );
}

#[test]
fn the_check_refuses_an_export_that_bypasses_the_boundary() {
    let source = r#"
        #[no_mangle]
        pub unsafe extern "C" fn keel_wrapped(out: *mut u64) -> keel_status {
            ffi::call(|| unsafe { Ok(()) })
        }
        #[no_mangle]
        pub unsafe extern "C" fn keel_bare(out: *mut u64) -> keel_status {
            unsafe { *out = 1 };
            keel_status::KEEL_OK
        }
        #[no_mangle]
        pub extern "C" fn keel_after(x: u32) -> u32 {
            let y = x + 1;
            ffi::call_value(|| y)
        }
        #[no_mangle]
        pub unsafe extern "C" fn keel_two_blocks(a: *const u8, b: *const u8) -> keel_status {
            ffi::call(|| {
                let a = unsafe { ffi::handle(a, "a")? };
                let b = unsafe { ffi::handle(b, "b")? };
                Ok(())
            })
        }
        fn not_exported() -> u32 { 1 }
    "#;
    let parsed = syn::parse_file(source).unwrap();
    let mut found = Vec::new();
    exports(&parsed.items, &mut found);
    assert_eq!(
        found,
        vec![
            ("keel_wrapped".to_owned(), true),
            ("keel_bare".to_owned(), false),
            ("keel_after".to_owned(), false),
            ("keel_two_blocks".to_owned(), false),
        ]
    );
}

#[test]
fn header_parsing_finds_declarations_not_callback_types() {
    let header = "typedef keel_status (*keel_task_fn)(void *userdata);\n\
                  keel_status keel_pool_run(const keel_pool *pool,\n\
                  \x20                         size_t count);\n\
                  const char *keel_version(void);\n\
                  #define KEEL_X(a) a\n";
    let names: Vec<String> = header_functions(header).into_iter().collect();
    assert_eq!(names, ["keel_pool_run", "keel_version"]);
}

/// The names `keel.h` gives at file level: `#define NAME`, `typedef ... name;`,
/// `struct name {` / `enum name {` tags and function names.
fn header_names(header: &str) -> BTreeSet<String> {
    let word = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = header_functions(header);
    for line in header.lines().filter(|line| !line.starts_with(' ')) {
        if let Some(rest) = line.strip_prefix("#define ") {
            names.insert(word(rest));
        } else if let Some(rest) = line.strip_prefix("typedef ") {
            // A function pointer names itself in `(*name)(...)`.
            let tagged = rest.strip_prefix("struct ").or_else(|| rest.strip_prefix("enum "));
            let name = match (rest.find("(*"), tagged) {
                (Some(at), _) => &rest[at + 2..],
                (None, Some(tag)) if rest.ends_with('{') => tag,
                _ => rest.trim_end_matches(';').rsplit([' ', '*']).next().unwrap_or(""),
            };
            names.insert(word(name));
        } else if let Some(rest) = line
            .strip_prefix("struct ")
            .or_else(|| line.strip_prefix("enum "))
            .or_else(|| line.strip_prefix("} "))
        {
            names.insert(word(rest));
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

#[test]
fn every_name_in_the_header_is_keels() {
    // cbindgen parses the core crate for its repr(C) stats structs, and
    // would bring anything else repr or const along: a name without keel's
    // prefix is such a stray (exclude it in cbindgen.toml) or a misnaming.
    let header = std::fs::read_to_string(crate_dir().join("../../include/keel.h")).unwrap();
    let names = header_names(&header);
    assert!(names.len() > 80, "parsed only {} names from keel.h", names.len());
    let strays: Vec<&String> = names
        .iter()
        .filter(|name| !(name.starts_with("keel_") || name.starts_with("KEEL_")))
        .collect();
    assert!(strays.is_empty(), "keel.h names things keel does not own: {strays:?}");
    assert!(names.contains("keel_pool_stats") && names.contains("KEEL_WAIT_FOREVER"));
    let stray = "#define PoolConfig_MAX_CONCURRENCY 65536\n";
    assert!(header_names(stray).contains("PoolConfig_MAX_CONCURRENCY"));
}
