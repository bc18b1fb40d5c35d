//! The plugin directory: every `*.wasm` in it is a plugin, a detector or the cause classifier
//! (told apart by the world the component exports). A file written (closed after writing) or
//! moved in is loaded; a file removed or moved out is unloaded.
//!
//! Reacting to close-after-write rather than to each write means a component being copied in
//! is read once, whole, instead of as a series of truncated files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

use super::Registry;

/// Whether a path names a plugin component (hidden files are uploads being written).
pub fn is_component(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.'))
}

/// Loads every component in `dir`, in name order. Files that fail are reported (in the log and
/// by [`Registry::file_errors`]) and skipped: one bad file must not keep the others out.
pub fn load_dir(registry: &Registry, dir: &Path) -> std::io::Result<usize> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_component(p)).collect();
    paths.sort();
    let mut loaded = 0;
    for path in paths {
        if registry.install_component_file(&path).is_ok() {
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Watches the plugin directory until dropped.
pub struct DirWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl DirWatcher {
    /// Watches `dir`, installing and removing plugins as their files come and go.
    pub fn start(registry: Arc<Registry>, dir: PathBuf) -> notify::Result<DirWatcher> {
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let thread = std::thread::Builder::new()
            .name("plugin-watch".into())
            .spawn(move || {
                // Ends when the watcher (the sender) is dropped.
                while let Ok(event) = rx.recv() {
                    match event {
                        Ok(event) => handle(&registry, &dir, event),
                        Err(err) => tracing::error!(dir = %dir.display(), "watching the plugin directory: {err}"),
                    }
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        tracing::info!("watching the plugin directory for changes");
        Ok(DirWatcher { watcher: Some(watcher), thread: Some(thread) })
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        drop(self.watcher.take());
        if let Some(thread) = self.thread.take() {
            // The thread may be compiling a component; it finishes that, then sees the end.
            let _ = thread.join();
        }
    }
}

fn handle(registry: &Registry, dir: &Path, event: notify::Event) {
    if event.need_rescan() {
        rescan(registry, dir);
        return;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            event.paths.iter().filter(|p| is_component(p)).for_each(|p| load(registry, p));
            // A signature that arrives after its component: try the component again.
            event.paths.iter().filter_map(|p| signed_component(p)).for_each(|p| load(registry, &p));
        }
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
            event.paths.iter().filter(|p| is_component(p)).for_each(|p| _ = registry.remove_file(p));
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if event.paths.len() == 2 => {
            let (from, to) = (&event.paths[0], &event.paths[1]);
            if is_component(from) {
                registry.remove_file(from);
            }
            if is_component(to) {
                load(registry, to);
            }
        }
        _ => {}
    }
}

/// The component `X.wasm` that a signature file `X.wasm.sig` belongs to.
fn signed_component(path: &Path) -> Option<PathBuf> {
    let component = path.to_str()?.strip_suffix(".sig")?;
    let component = PathBuf::from(component);
    is_component(&component).then_some(component)
}

fn load(registry: &Registry, path: &Path) {
    // A file may be gone again by the time its event arrives (a temporary file, say).
    if path.is_file() {
        // Errors are logged and kept by the registry.
        let _ = registry.install_component_file(path);
    }
}

/// After the kernel dropped events: load what is there, unload what is gone.
fn rescan(registry: &Registry, dir: &Path) {
    tracing::warn!(dir = %dir.display(), "plugin directory events were lost; rescanning");
    let classifier = registry.classifier().and_then(|c| c.path);
    for path in registry.list().into_iter().filter_map(|s| s.path).chain(classifier) {
        if path.parent() == Some(dir) && !path.exists() {
            registry.remove_file(&path);
        }
    }
    if let Err(err) = load_dir(registry, dir) {
        tracing::error!(dir = %dir.display(), "rescanning the plugin directory: {err}");
    }
}
