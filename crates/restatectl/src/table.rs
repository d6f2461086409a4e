//! Plain tables in the style of the reference `restatectl`.

use comfy_table::{ContentArrangement, Table, presets};

pub(crate) fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    table
}
