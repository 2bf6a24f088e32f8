// Building the page's elements: properties set in code, text always as text (never as HTML).

/** document.createElement with properties set. */
export function element(tag, properties = {}) {
  return Object.assign(document.createElement(tag), properties);
}
