//! git clone / fetch / checkout steps. Not written yet; see the README's status table.
