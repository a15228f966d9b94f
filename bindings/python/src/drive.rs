//! `keel.Drive`, its batches (`keel.DriveBatch`) and listing iterators.
//! Items are dicts in the JSON form of `keel::drive::json`; every call that
//! touches LMDB runs with the GIL released.

use std::sync::{Arc, Weak};

use keel::drive::{
    Drive, DriveOptions, DriveView, Item, ItemId, Level, Migration, NewItem, OpenBatch, Permissions, Version,
    WalkOrder, Write, Written,
};
use keel::Error;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use serde_json::Value;

use crate::errors::to_pyerr;
use crate::held::Held;
use crate::json::{from_py, to_py};
use crate::run::{blocking, quick};
use crate::times::seconds;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDrive>()?;
    m.add_class::<PyDriveBatch>()?;
    m.add_class::<PyItemIter>()?;
    m.add("DRIVE_ROOT", ItemId::ROOT.to_string())?;
    m.add_function(wrap_pyfunction!(verify_file, m)?)?;
    Ok(())
}

/// Verifies a keel LMDB file (a drive, or operations and jobs) in a child
/// process, so damage that would crash LMDB cannot crash this one; returns
/// the report as a dict: `{"file", "ok", "tables", "problems",
/// "more_problems"}`. Never changes the file.
#[pyfunction]
fn verify_file<'py>(py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let report = blocking(py, || keel::drive::verify_file(&path))?;
    to_py(py, &report.to_json())
}

/// An item id from Python: 32 hex characters, 16 bytes, or None (the root).
fn id_arg(value: Option<&Bound<'_, PyAny>>) -> PyResult<ItemId> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(ItemId::ROOT);
    };
    let parsed = if let Ok(text) = value.cast::<PyString>() {
        ItemId::parse(
            &text
                .to_cow()
                .map_err(|_| Error::invalid_argument("item id is not valid UTF-8"))
                .map_err(err)?,
        )
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        <[u8; 16]>::try_from(bytes.as_bytes())
            .map(ItemId::from_bytes)
            .map_err(|_| Error::invalid_argument("an item id as bytes is 16 bytes long"))
    } else {
        Err(Error::invalid_argument(
            "an item id is a 32-character hex str or 16 bytes",
        ))
    };
    parsed.map_err(err)
}

fn err(error: Error) -> PyErr {
    Python::attach(|py| to_pyerr(py, error))
}

fn replace_needs_version() -> keel::Error {
    keel::Error::invalid_argument("replace=True needs the version to replace")
}

/// A migration that is not callable is refused when the schema is set, not
/// when (or if) the first item of the type is migrated.
fn refuse_uncallable(migrate: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = migrate.py();
    quick(py, || {
        if migrate.is_callable() {
            return Ok(());
        }
        let kind = migrate
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        Err(keel::Error::invalid_argument(format!(
            "migrate must be callable, not {kind}"
        )))
    })
}

fn version_arg(version: Option<&str>) -> keel::Result<Option<Version>> {
    version.map(Version::parse).transpose()
}

/// An id as a str of 32 lowercase hex characters, without a Rust string
/// in between.
fn id_str(py: Python<'_>, id: ItemId) -> Bound<'_, PyString> {
    let hex = id.to_hex();
    PyString::new(py, std::str::from_utf8(&hex).unwrap_or_default())
}

/// A level's name, one shared str per level.
fn level_str(py: Python<'_>, level: Level) -> &Bound<'_, PyString> {
    use pyo3::intern;
    match level {
        Level::Deny => intern!(py, "deny"),
        Level::Read => intern!(py, "read"),
        Level::Edit => intern!(py, "edit"),
        Level::Admin => intern!(py, "admin"),
    }
}

/// The item as a dict with the keys of its JSON form, built directly (no
/// JSON value in between: this is the hot path of every item call). Keys
/// and level names are interned strs, shared by every dict.
fn item_dict<'py>(py: Python<'py>, item: &Item) -> PyResult<Bound<'py, PyDict>> {
    use pyo3::intern;
    let dict = PyDict::new(py);
    dict.set_item(intern!(py, "id"), id_str(py, item.id))?;
    dict.set_item(intern!(py, "parent"), id_str(py, item.parent))?;
    dict.set_item(intern!(py, "name"), &item.name)?;
    dict.set_item(intern!(py, "type"), &item.kind)?;
    dict.set_item(intern!(py, "created"), seconds(item.created))?;
    dict.set_item(intern!(py, "creator"), &item.creator)?;
    dict.set_item(intern!(py, "children"), item.children)?;
    dict.set_item(intern!(py, "data_size"), item.data_size)?;
    dict.set_item(intern!(py, "version"), item.version.map(|v| v.to_string()))?;
    dict.set_item(intern!(py, "updated"), seconds(item.updated))?;
    dict.set_item(intern!(py, "updater"), &item.updater)?;
    let permissions = PyDict::new(py);
    permissions.set_item(
        intern!(py, "default"),
        item.permissions.default.map(|level| level_str(py, level)),
    )?;
    let levels = |map: &std::collections::BTreeMap<String, Level>| -> PyResult<Bound<'py, PyDict>> {
        let levels = PyDict::new(py);
        for (name, level) in map {
            levels.set_item(name, level_str(py, *level))?;
        }
        Ok(levels)
    };
    permissions.set_item(intern!(py, "users"), levels(&item.permissions.users)?)?;
    permissions.set_item(intern!(py, "roles"), levels(&item.permissions.roles)?)?;
    dict.set_item(intern!(py, "permissions"), permissions)?;
    Ok(dict)
}

fn item_list<'py>(py: Python<'py>, items: &[Item]) -> PyResult<Bound<'py, PyList>> {
    let dicts = items
        .iter()
        .map(|item| item_dict(py, item))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, dicts)
}

/// A write's result as Python: an item dict, a list of them, a count or a
/// version str (None).
fn written_py<'py>(py: Python<'py>, written: &Written) -> PyResult<Bound<'py, PyAny>> {
    Ok(match written {
        Written::Item(item) => item_dict(py, item)?.into_any(),
        Written::Items(items) => item_list(py, items)?.into_any(),
        Written::Deleted(count) => count.into_pyobject(py)?.into_any(),
        Written::Version(version) => PyString::new(py, &version.to_string()).into_any(),
        Written::Current(current) => match current {
            Some(version) => PyString::new(py, &version.to_string()).into_any(),
            None => py.None().into_bound(py),
        },
    })
}

fn new_item(name: String, kind: Option<String>, permissions: Option<&Bound<'_, PyAny>>) -> keel::Result<NewItem> {
    let permissions = match permissions.filter(|p| !p.is_none()) {
        Some(p) => Permissions::from_json(&from_py(p)?)?,
        None => Permissions::default(),
    };
    Ok(NewItem {
        name,
        kind,
        permissions,
    })
}

fn walk_order(order: &str) -> keel::Result<WalkOrder> {
    match order {
        "children_first" => Ok(WalkOrder::ChildrenFirst),
        "parents_first" => Ok(WalkOrder::ParentsFirst),
        other => Err(Error::invalid_argument(format!(
            "walk order {other:?} is not \"children_first\" or \"parents_first\""
        ))),
    }
}

/// Where a `Drive` object's calls run: the drive itself (each call its own
/// transaction, run with the GIL released), or an open batch (calls run in
/// the batch's transaction on the thread that opened it; they wait for
/// nothing, so the GIL stays held and a call costs no thread switch).
#[derive(Clone)]
enum Target {
    View(Arc<Held<DriveView>>),
    Batch(Arc<BatchSlot>),
}

impl Target {
    /// keel.Closed once the view this target runs as is closed.
    fn check_open(&self) -> keel::Result<()> {
        let view = match self {
            Target::View(view) => view,
            Target::Batch(slot) => &slot.view,
        };
        view.check()
    }
}

/// A `DriveBatch`'s batch: opened by `__enter__`, ended by `__exit__`.
struct BatchSlot {
    /// The view that made the batch: closing it refuses the batch's calls.
    view: Arc<Held<DriveView>>,
    open: Mutex<Option<OpenBatch>>,
}

/// What every Python object of one opened drive shares. Closing the drive
/// (the object `keel.Drive(...)` made) ends every hold on it: the drive's,
/// its `as_user` views', and so its iterators' and batches'; the LMDB file
/// is released once the calls in flight (and a batch still open) end.
struct Opened {
    drive: Held<Drive>,
    views: Mutex<Vec<Weak<Held<DriveView>>>>,
}

impl Opened {
    /// A new view's hold, closed with the drive.
    fn hold(&self, view: DriveView, what: String) -> Arc<Held<DriveView>> {
        let held = Arc::new(Held::new(view, what));
        let mut views = self.views.lock();
        views.retain(|view| view.strong_count() > 0);
        views.push(Arc::downgrade(&held));
        held
    }

    fn close(&self, py: Python<'_>) {
        self.drive.close(py);
        // Taken out first: closing releases the GIL, and another thread
        // holding it may be waiting for this lock in `hold`.
        let views: Vec<_> = self.views.lock().drain(..).filter_map(|view| view.upgrade()).collect();
        for view in views {
            view.close(py);
        }
    }
}

/// Runs `body` on the slot's open batch with the GIL held. The slot's mutex
/// is only ever taken with the GIL held and never across a release of it,
/// so `try_lock` fails only if a migration callback is re-entering.
fn in_batch<T>(py: Python<'_>, slot: &BatchSlot, body: impl FnOnce(&OpenBatch) -> keel::Result<T>) -> PyResult<T> {
    quick(py, || {
        slot.view.check()?;
        let open = slot
            .open
            .try_lock()
            .ok_or_else(|| Error::would_deadlock("the batch is busy with another call"))?;
        match open.as_ref() {
            Some(batch) => body(batch),
            None => Err(Error::closed("the batch is not open: use it in a `with` block")),
        }
    })
}

/// Runs one drive call on `target`: `call!(target, py, |d| d.get(id))`. The
/// body is written once and compiled for the view and for the open batch
/// (both are `keel::drive::Calls`), so `Drive` and `DriveBatch` share every
/// method.
macro_rules! call {
    ($target:expr, $py:expr, |$d:ident| $body:expr) => {
        match $target {
            Target::View(held) => blocking($py, || {
                let view = held.get()?;
                let $d = &view;
                $body
            }),
            Target::Batch(slot) => in_batch($py, slot, |$d| $body),
        }
    };
}

/// A drive: a tree of named items, typed items carrying versioned JSON data,
/// per-item permissions. `Drive(path)` opens (or creates) the file; every
/// write is durable when it returns. Item ids are 32-character hex str (16
/// bytes are accepted too); `None` as a parent means the root.
///
/// `close()` (or the end of `with keel.Drive(path) as drive:`) releases the
/// file: every later call on the drive, its `as_user` views, iterators and
/// batches raises keel.Closed. A batch already open when the drive closes
/// still ends as its block does (committed or undone).
#[pyclass(name = "Drive", module = "keel", frozen, subclass)]
pub struct PyDrive {
    opened: Arc<Opened>,
    /// The view this object's calls are made as (a batch's: the view that
    /// opened it).
    view: Arc<Held<DriveView>>,
    target: Target,
    /// Whether this is the drive `keel.Drive(...)` made (closing it closes
    /// every view) rather than an `as_user` view or a batch.
    root: bool,
    path: String,
    user: String,
    checked: bool,
}

impl PyDrive {
    /// The view's hold, if this object is not a batch (for calls a batch lacks).
    fn unbatched(&self, py: Python<'_>, call: &str) -> PyResult<&Arc<Held<DriveView>>> {
        match &self.target {
            Target::View(view) => Ok(view),
            Target::Batch(_) => Err(to_pyerr(
                py,
                Error::invalid_argument(format!("{call} is not a batch call: call it on the drive")),
            )),
        }
    }

    /// The open drive, or keel.Closed once this view or the drive is closed.
    fn drive(&self) -> keel::Result<Drive> {
        self.view.check()?;
        self.opened.drive.get()
    }

    fn kind(&self) -> &'static str {
        match self.target {
            Target::View(_) => "Drive",
            Target::Batch(_) => "DriveBatch",
        }
    }

    /// A view of the same drive (as_user's or a batch's), sharing its hold.
    fn sibling(&self, view: Arc<Held<DriveView>>, target: Target, user: String, checked: bool) -> PyDrive {
        PyDrive {
            opened: self.opened.clone(),
            view,
            target,
            root: false,
            path: self.path.clone(),
            user,
            checked,
        }
    }
}

#[pymethods]
impl PyDrive {
    #[new]
    #[pyo3(signature = (path, *, durable=true, initial_map_size=None, allow_types_without_schema=true))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        durable: bool,
        initial_map_size: Option<usize>,
        allow_types_without_schema: bool,
    ) -> PyResult<Self> {
        let options = DriveOptions {
            allow_types_without_schema,
            ..DriveOptions::with_durable(durable, initial_map_size)
        };
        let drive = blocking(py, || Drive::open(&path, &options))
            .map_err(|err| crate::errors::with_filename(py, err, &path))?;
        let shown = drive.path().display().to_string();
        let view = (*drive).clone();
        let opened = Arc::new(Opened {
            drive: Held::new(drive, format!("the drive {shown:?}")),
            views: Mutex::new(Vec::new()),
        });
        let view = opened.hold(view, format!("the drive {shown:?}"));
        Ok(PyDrive {
            opened,
            target: Target::View(view.clone()),
            view,
            root: true,
            path: shown,
            user: String::new(),
            checked: false,
        })
    }

    /// Releases the drive (see the class): every later call raises
    /// keel.Closed. On an `as_user` view, closes that view only. Closing
    /// twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.unbatched(py, "close")?;
        match self.root {
            true => self.opened.close(py),
            false => self.view.close(py),
        }
        Ok(())
    }

    /// Whether `close()` was called (on this view or on its drive).
    #[getter]
    fn closed(&self) -> bool {
        self.view.is_closed()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the drive (or the view).
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.close(py)
    }

    /// A view of the same drive whose every call enforces `user`'s levels
    /// (with `roles`); raises keel.PermissionDenied when a level is missing,
    /// and when called on a checked view.
    #[pyo3(signature = (user, roles=Vec::new()))]
    fn as_user(&self, py: Python<'_>, user: &str, roles: Vec<String>) -> PyResult<PyDrive> {
        let view = self.unbatched(py, "as_user")?;
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let checked = quick(py, || view.get()?.as_user(user, &roles))?;
        let (user, is_checked) = (checked.user().to_owned(), checked.is_checked());
        let held = self
            .opened
            .hold(checked, format!("the view of {:?} as {user:?}", self.path));
        Ok(self.sibling(held.clone(), Target::View(held), user, is_checked))
    }

    /// The user this view acts as ("" for the unchecked drive).
    #[getter]
    fn user(&self) -> String {
        self.user.clone()
    }

    /// Whether this view enforces permission levels.
    #[getter]
    fn checked(&self) -> bool {
        self.checked
    }

    /// The drive file's canonical path (also once closed).
    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// The item with this id, as a dict; with `type`, raises keel.Conflict
    /// if the item has another type.
    #[pyo3(signature = (id, r#type=None))]
    fn get<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>, r#type: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
        let id = id_arg(Some(id))?;
        let item = call!(&self.target, py, |d| match r#type {
            Some(kind) => d.get_typed(id, kind),
            None => d.get(id),
        })?;
        item_dict(py, &item)
    }

    /// Every item along `path` ("a/b/c", case-insensitive), first step first.
    fn resolve<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyList>> {
        let items = call!(&self.target, py, |d| d.resolve(path))?;
        item_list(py, &items)
    }

    /// The item at `path` (the root for "").
    fn at_path<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyDict>> {
        let item = call!(&self.target, py, |d| d.at_path(path))?;
        item_dict(py, &item)
    }

    /// The path of an item ("a/b/c", names as given).
    fn path_of(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<String> {
        let id = id_arg(Some(id))?;
        call!(&self.target, py, |d| d.path_of(id))
    }

    /// The children of `parent` (None: the root) in name order, ignoring
    /// case, starting after the child named `after`, at most `limit`: an
    /// iterator fetching pages of 256 (with the GIL released, outside a
    /// batch).
    #[pyo3(signature = (parent=None, *, after=None, limit=None))]
    fn children(
        &self,
        parent: Option<&Bound<'_, PyAny>>,
        after: Option<String>,
        limit: Option<usize>,
    ) -> PyResult<PyItemIter> {
        Ok(PyItemIter::new(
            self.target.clone(),
            Listing::Children(id_arg(parent)?),
            after,
            limit,
        ))
    }

    /// Items of `type`, by id, after `after`, at most `limit`: an iterator
    /// fetching pages.
    #[pyo3(signature = (r#type, *, after=None, limit=None))]
    fn by_type(&self, r#type: String, after: Option<&Bound<'_, PyAny>>, limit: Option<usize>) -> PyResult<PyItemIter> {
        let after = match after.filter(|a| !a.is_none()) {
            Some(a) => Some(id_arg(Some(a))?.to_string()),
            None => None,
        };
        Ok(PyItemIter::new(
            self.target.clone(),
            Listing::ByType(r#type),
            after,
            limit,
        ))
    }

    /// Every readable item below `top` (None: the whole drive), children
    /// before parents ("children_first") or parents first: an iterator over
    /// one consistent snapshot.
    #[pyo3(signature = (top=None, *, order="children_first"))]
    fn walk(&self, py: Python<'_>, top: Option<&Bound<'_, PyAny>>, order: &str) -> PyResult<PyItemIter> {
        let top = id_arg(top)?;
        let order = quick(py, || walk_order(order))?;
        let items = call!(&self.target, py, |d| d.walk(top, order))?;
        Ok(PyItemIter::done(self.target.clone(), items))
    }

    /// Creates an item named `name` under `parent` (None: the root).
    #[pyo3(signature = (parent, name, *, r#type=None, permissions=None))]
    fn create<'py>(
        &self,
        py: Python<'py>,
        parent: Option<&Bound<'py, PyAny>>,
        name: String,
        r#type: Option<String>,
        permissions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let parent = id_arg(parent)?;
        let new = quick(py, || new_item(name, r#type, permissions))?;
        let item = call!(&self.target, py, |d| d.create(parent, &new))?;
        item_dict(py, &item)
    }

    /// Creates an item under the item at `parent_path`.
    #[pyo3(signature = (parent_path, name, *, r#type=None, permissions=None))]
    fn create_at<'py>(
        &self,
        py: Python<'py>,
        parent_path: &str,
        name: String,
        r#type: Option<String>,
        permissions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let new = quick(py, || new_item(name, r#type, permissions))?;
        let item = call!(&self.target, py, |d| d.create_at(parent_path, &new))?;
        item_dict(py, &item)
    }

    /// Creates the missing folders along `path`; returns every step's item.
    fn make_path<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyList>> {
        let items = call!(&self.target, py, |d| d.make_path(path))?;
        item_list(py, &items)
    }

    /// Moves an item under `new_parent` (None: the root), renamed if
    /// `new_name` is given, in one transaction.
    #[pyo3(signature = (id, new_parent, new_name=None))]
    fn move_item<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        new_parent: Option<&Bound<'py, PyAny>>,
        new_name: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (id, new_parent) = (id_arg(Some(id))?, id_arg(new_parent)?);
        let item = call!(&self.target, py, |d| d.move_item(id, new_parent, new_name))?;
        item_dict(py, &item)
    }

    /// Renames an item within its parent.
    fn rename<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>, new_name: &str) -> PyResult<Bound<'py, PyDict>> {
        let id = id_arg(Some(id))?;
        let item = call!(&self.target, py, |d| d.rename(id, new_name))?;
        item_dict(py, &item)
    }

    /// Deletes an item and everything below it; returns how many items.
    fn delete(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<u64> {
        let id = id_arg(Some(id))?;
        call!(&self.target, py, |d| d.delete(id))
    }

    /// Replaces an item's own permissions:
    /// `{"default": "read", "users": {"ann": "admin"}, "roles": {...}}`.
    fn set_permissions<'py>(
        &self,
        py: Python<'py>,
        id: Option<&Bound<'py, PyAny>>,
        permissions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id = id_arg(id)?;
        let permissions = quick(py, || Permissions::from_json(&from_py(permissions)?))?;
        let item = call!(&self.target, py, |d| d.set_permissions(id, &permissions))?;
        item_dict(py, &item)
    }

    /// Stores `data` (JSON-compatible) as `version` ("1.2.3"; default: the
    /// next patch) of a typed item; returns the version written. A version
    /// already stored raises keel.AlreadyExists unless `replace=True`.
    #[pyo3(signature = (id, data, version=None, *, replace=false))]
    fn set_data(
        &self,
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        version: Option<&str>,
        replace: bool,
    ) -> PyResult<String> {
        let id = id_arg(Some(id))?;
        let (data, version) = quick(py, || Ok((from_py(data)?, version_arg(version)?)))?;
        let written = call!(&self.target, py, |d| match (replace, version) {
            (true, Some(version)) => d.replace_data(id, &data, version),
            (true, None) => Err(replace_needs_version()),
            (false, _) => d.set_data(id, &data, version),
        })?;
        Ok(written.to_string())
    }

    /// `(version, data)` of an item: the current version, or `version`.
    #[pyo3(signature = (id, version=None))]
    fn get_data<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        version: Option<&str>,
    ) -> PyResult<(String, Bound<'py, PyAny>)> {
        let id = id_arg(Some(id))?;
        let version = quick(py, || version_arg(version))?;
        let (version, data) = call!(&self.target, py, |d| d.get_data(id, version))?;
        Ok((version.to_string(), to_py(py, &data)?))
    }

    /// Every stored version of an item's data, newest first, as dicts.
    fn versions<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let id = id_arg(Some(id))?;
        let versions = call!(&self.target, py, |d| d.versions(id))?;
        let list = PyList::empty(py);
        for info in &versions {
            list.append(to_py(py, &crate::times::in_seconds(info.to_json()))?)?;
        }
        Ok(list)
    }

    /// Deletes one version; returns the current version afterwards (or None).
    fn delete_data(&self, py: Python<'_>, id: &Bound<'_, PyAny>, version: &str) -> PyResult<Option<String>> {
        let id = id_arg(Some(id))?;
        let version = quick(py, || Version::parse(version))?;
        let current = call!(&self.target, py, |d| d.delete_data(id, version))?;
        Ok(current.map(|v| v.to_string()))
    }

    /// Registers `schema` (a JSON Schema dict) as `version` of `type`'s
    /// schema. The same version again returns False; a lower one raises
    /// keel.Conflict; a higher one calls `migrate(item, version, data,
    /// from_schema, to_schema) -> new data` for every stored version of every
    /// item of the type, all in one transaction: if it raises, nothing
    /// changes. `migrate` runs holding the GIL (on a keel thread, outside a
    /// batch).
    #[pyo3(signature = (r#type, schema, version, migrate=None))]
    fn set_schema(
        &self,
        py: Python<'_>,
        r#type: &str,
        schema: &Bound<'_, PyAny>,
        version: u32,
        migrate: Option<Py<PyAny>>,
    ) -> PyResult<bool> {
        let schema = quick(py, || from_py(schema))?;
        if let Some(callable) = &migrate {
            refuse_uncallable(callable.bind(py))?;
        }
        call!(&self.target, py, |d| match &migrate {
            Some(callable) => {
                let mut call = |step: &Migration<'_>, data: Value| call_migration(callable, step, data);
                d.set_schema(r#type, &schema, version, Some(&mut call))
            }
            None => d.set_schema(r#type, &schema, version, None),
        })
    }

    /// `(version, schema)` registered for `type`, or None.
    fn schema<'py>(&self, py: Python<'py>, r#type: &str) -> PyResult<Option<(u32, Bound<'py, PyAny>)>> {
        let found = call!(&self.target, py, |d| d.schema(r#type))?;
        found
            .map(|(version, schema)| Ok((version, to_py(py, &schema)?)))
            .transpose()
    }

    /// Applies many writes in one transaction, all or nothing: a list of
    /// calls in the JSON form of keel::drive::Write — `{"op": "create",
    /// "parent": id | None, "item": {"name": ..., "type": ...}}`,
    /// `create_at` (`parent_path`, `item`), `make_path` (`path`), `move`
    /// (`id`, `parent`, `name`), `rename` (`id`, `name`), `delete` (`id`),
    /// `set_permissions` (`id`, `permissions`), `set_data` (`id`, `data`,
    /// `version`), `delete_data` (`id`, `version`). Returns each call's
    /// result in order. Outside a batch, one durable commit.
    fn apply<'py>(&self, py: Python<'py>, writes: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let writes = quick(py, || {
            let writes = from_py(writes)?;
            let Value::Array(writes) = writes else {
                return Err(Error::invalid_argument("apply takes a list of writes"));
            };
            writes
                .iter()
                .enumerate()
                .map(|(at, write)| Write::from_json(write).map_err(|err| err.context(format!("write {at}"))))
                .collect::<keel::Result<Vec<Write>>>()
        })?;
        let written = call!(&self.target, py, |d| d.apply(&writes))?;
        let results = written
            .iter()
            .map(|w| written_py(py, w))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, results)
    }

    /// A batch: `with drive.batch() as b:` — every call on `b` (it has all of
    /// the drive's calls) is one transaction, committed durably when the
    /// block ends without an exception and undone otherwise. Other writers
    /// wait while it is open. It runs on the thread that entered it; calls
    /// from another thread raise keel.WouldDeadlock, and so does a write
    /// through the drive itself from inside the block.
    fn batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDriveBatch>> {
        let view = self.unbatched(py, "batch")?;
        quick(py, || view.check())?;
        let slot = Arc::new(BatchSlot {
            view: view.clone(),
            open: Mutex::new(None),
        });
        let base = self.sibling(
            view.clone(),
            Target::Batch(slot.clone()),
            self.user.clone(),
            self.checked,
        );
        Bound::new(py, PyClassInitializer::from(base).add_subclass(PyDriveBatch { slot }))
    }

    /// Checks the whole drive file in a child process; returns the report
    /// (see keel.verify_file). A damaged file is a report, never a crash.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let report = blocking(py, || self.drive()?.verify())?;
        to_py(py, &report.to_json())
    }

    /// Writes a consistent, compacted copy of the drive to `dest`.
    fn backup(&self, py: Python<'_>, dest: std::path::PathBuf) -> PyResult<()> {
        self.unbatched(py, "backup")?;
        blocking(py, || self.drive()?.backup(&dest))
    }

    /// The storage map's size and use and the commit counters, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let drive = quick(py, || self.drive())?;
        crate::json::to_py_serialized(py, &drive.env().stats())
    }

    fn __repr__(&self) -> String {
        let who = if self.checked {
            format!(" as {:?}", self.user)
        } else {
            String::new()
        };
        let state = match &self.target {
            _ if self.view.is_closed() => " closed",
            Target::Batch(slot) => match slot.open.try_lock() {
                Some(open) if open.is_some() => " open",
                Some(_) => " not open",
                None => " busy",
            },
            Target::View(_) => "",
        };
        format!("<keel.{} {:?}{who}{state}>", self.kind(), self.path)
    }
}

/// Runs a Python migration callable (attached to the interpreter: on a keel
/// thread outside a batch, on the caller's inside one).
fn call_migration(callable: &Py<PyAny>, step: &Migration<'_>, data: Value) -> keel::Result<Value> {
    let outcome = crate::run::attached(|py| -> PyResult<keel::Result<Value>> {
        let args = (
            to_py(py, &crate::times::in_seconds(step.item.to_json()))?,
            step.version.to_string(),
            to_py(py, &data)?,
            step.from_schema,
            step.to_schema,
        );
        let result = callable.bind(py).call1(args)?;
        Ok(from_py(&result))
    });
    match outcome {
        None => Err(Error::closed("the Python interpreter is shutting down")),
        Some(Ok(result)) => result,
        Some(Err(raised)) => Err(Error::invalid_argument(format!(
            "the migration callback raised {raised}"
        ))),
    }
}

/// What a [`PyItemIter`] pages through.
enum Listing {
    Children(ItemId),
    ByType(String),
    Done,
}

/// An iterator over item dicts, fetching a page at a time (children, by
/// type) or over a list read at once (walk).
#[pyclass(name = "ItemIterator", module = "keel")]
pub struct PyItemIter {
    /// The drive (or batch) listed: once it is closed, `next` raises keel.Closed.
    target: Target,
    listing: Listing,
    after: Option<String>,
    remaining: Option<usize>,
    page: std::collections::VecDeque<Item>,
}

const PAGE: usize = 256;

impl PyItemIter {
    fn new(target: Target, listing: Listing, after: Option<String>, limit: Option<usize>) -> Self {
        PyItemIter {
            target,
            listing,
            after,
            remaining: limit,
            page: Default::default(),
        }
    }

    fn done(target: Target, items: Vec<Item>) -> Self {
        PyItemIter {
            target,
            listing: Listing::Done,
            after: None,
            remaining: None,
            page: items.into(),
        }
    }

    fn fetch(&mut self, py: Python<'_>) -> PyResult<()> {
        let want = self.remaining.map_or(PAGE, |left| left.min(PAGE));
        if want == 0 {
            self.listing = Listing::Done;
            return Ok(());
        }
        let target = &self.target;
        let after = self.after.as_deref();
        let page = match &self.listing {
            Listing::Children(parent) => call!(target, py, |d| d.children(*parent, after, want))?,
            Listing::ByType(kind) => call!(target, py, |d| {
                let after = after.map(ItemId::parse).transpose()?;
                d.by_type(kind, after, want)
            })?,
            Listing::Done => Vec::new(),
        };
        if page.len() < want {
            self.listing = Listing::Done;
        }
        if let Some(last) = page.last() {
            self.after = Some(match self.listing {
                Listing::ByType(_) => last.id.to_string(),
                _ => last.name.clone(),
            });
        }
        if let Some(left) = self.remaining.as_mut() {
            *left -= page.len();
        }
        self.page.extend(page);
        Ok(())
    }
}

#[pymethods]
impl PyItemIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        quick(py, || self.target.check_open())?;
        if self.page.is_empty() && !matches!(self.listing, Listing::Done) {
            self.fetch(py)?;
        }
        match self.page.pop_front() {
            Some(item) => item_dict(py, &item).map(Some),
            None => Ok(None),
        }
    }

    fn __repr__(&self) -> String {
        let listing = match &self.listing {
            Listing::Children(parent) => format!("children of {parent}"),
            Listing::ByType(kind) => format!("items of type {kind:?}"),
            Listing::Done if self.page.is_empty() => "done".to_owned(),
            Listing::Done => "last page".to_owned(),
        };
        let after = match (&self.after, &self.listing) {
            (Some(after), Listing::Children(_) | Listing::ByType(_)) => format!(" after {after:?}"),
            _ => String::new(),
        };
        let closed = match self.target.check_open() {
            Ok(()) => "",
            Err(_) => " closed",
        };
        format!(
            "<keel.ItemIterator {listing}{after}, {} fetched not yet read{closed}>",
            self.page.len()
        )
    }
}

/// A drive batch for a `with` block (see `Drive.batch`): a `Drive` whose
/// calls run in the batch's transaction.
#[pyclass(name = "DriveBatch", module = "keel", frozen, extends = PyDrive)]
pub struct PyDriveBatch {
    slot: Arc<BatchSlot>,
}

#[pymethods]
impl PyDriveBatch {
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        let slot = &slf.get().slot;
        if slot.open.try_lock().is_none_or(|open| open.is_some()) {
            return Err(to_pyerr(py, Error::invalid_argument("the batch is already open")));
        }
        // Waits for the writers queued before it with the GIL released, on
        // this thread: the batch's transaction belongs to it.
        let begun = blocking(py, || slot.view.get()?.begin_batch())?;
        *slot.open.lock() = Some(begun);
        Ok(slf)
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let failed = exc_type.is_some_and(|t| !t.is_none());
        let batch = quick(py, || {
            let mut open = self
                .slot
                .open
                .try_lock()
                .ok_or_else(|| Error::would_deadlock("the batch is busy with another call"))?;
            if open.as_ref().is_some_and(|batch| !batch.opened_here()) {
                return Err(Error::would_deadlock(
                    "a batch is ended only by the thread that opened it",
                ));
            }
            Ok(open.take())
        })?;
        if let Some(batch) = batch {
            blocking(py, move || if failed { batch.abort() } else { batch.commit() })?;
        }
        Ok(())
    }
}
