"""The web page's browser tests. A package (unlike the other test folders) so that its
package-scoped farm and browser stop when these tests end, not when the whole session does."""
