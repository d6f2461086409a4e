//! Plain tables in the style of the reference `restatectl`.

use comfy_table::{ContentArrangement, Table, presets};

pub(crate) fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    let preset = match crate::settings::get().table_style {
        crate::settings::TableStyle::Compact => presets::NOTHING,
        crate::settings::TableStyle::Borders => presets::UTF8_FULL,
    };
    table
        .load_preset(preset)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    table
}
