//! The reference pages of the book (`docs/src/reference/`) generated from
//! the code they describe: the AppStack fields from the CRD the binary
//! prints, the command line from clap, the metrics from the registry. Each
//! page is committed; `scripts/generate.sh` rewrites it (`appstack docs
//! PAGE`) and a unit test fails when the committed copy drifts.

mod cli;
mod fields;
mod markdown;
mod metrics;

/// A generated page of the book.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// Every field of the AppStack, from the CRD's schema.
    Fields,
    /// Every command and flag of `appstack`, from clap.
    Cli,
    /// Every metric `/metrics` serves, from the registry.
    Metrics,
}

impl Page {
    /// Every generated page.
    pub const ALL: [Page; 3] = [Page::Fields, Page::Cli, Page::Metrics];

    /// Where the page lives, from the repository's root.
    pub fn path(self) -> &'static str {
        match self {
            Page::Fields => "docs/src/reference/appstack.md",
            Page::Cli => "docs/src/reference/cli.md",
            Page::Metrics => "docs/src/reference/metrics.md",
        }
    }

    /// The page as the code makes it now.
    pub fn generate(self) -> String {
        match self {
            Page::Fields => fields::page(&crate::api::crd::definition()),
            Page::Cli => cli::page(),
            Page::Metrics => metrics::page(&crate::runtime::metrics::Metrics::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(page: Page) -> &'static str {
        match page {
            Page::Fields => include_str!("../../docs/src/reference/appstack.md"),
            Page::Cli => include_str!("../../docs/src/reference/cli.md"),
            Page::Metrics => include_str!("../../docs/src/reference/metrics.md"),
        }
    }

    #[test]
    fn committed_reference_pages_match_the_generated_ones() {
        for page in Page::ALL {
            assert!(
                committed(page) == page.generate(),
                "{} is stale: run scripts/generate.sh and commit the result",
                page.path()
            );
        }
    }

    #[test]
    fn the_stages_page_carries_the_table_of_the_stages() {
        let page = include_str!("../../docs/src/concepts/stages.md");
        assert!(
            page.contains(&crate::stages::markdown_table()),
            "docs/src/concepts/stages.md's stage table differs from stages::ORDER; paste this:\n{}",
            crate::stages::markdown_table()
        );
    }
}
