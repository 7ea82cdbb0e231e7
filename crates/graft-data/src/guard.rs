//! Panics inside dependencies (tokenizers, parquet) on malformed files become errors. While a
//! guarded call runs, [`active`] is true on its thread, so the command's panic hook can keep quiet
//! about a panic that is about to be reported as a clear error.

use std::cell::Cell;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Whether a guarded call is running on this thread.
pub fn active() -> bool {
    GUARDED.with(Cell::get)
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let was = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    })
}
