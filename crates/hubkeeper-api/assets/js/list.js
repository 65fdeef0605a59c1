// The filtered, paged lists of the dashboard (Token Management, User Management, Activity Logs):
// filters kept in the address so a filtered view can be shared or reloaded, cursor paging, and
// reloads that keep the current table until the new one is there.

import { clear, loading, errorState, pager } from './ui.js';

/** Writes the non-empty `filters` into the address bar (replacing the history entry). */
function filtersToAddress(filters) {
  const url = new URL(location.href);
  for (const [k, v] of Object.entries(filters)) {
    if (v) url.searchParams.set(k, v);
    else url.searchParams.delete(k);
  }
  history.replaceState({}, '', url.pathname + url.search);
}

/**
 * A paged list drawn into `box`.
 *
 * - `fetchPage(cursor)` resolves to `{ items, page }` (see `listOf` in api.js);
 * - `empty()` returns what to show when there are no items;
 * - `draw(items)` returns the table;
 * - `pagerLabel({ total, items, pageIndex })` labels the pager;
 * - `drawn(items)` (optional) runs after a page is drawn;
 * - `filters`: the object the page's filter form edits.
 *
 * Returns `{ load, applyFilters, close, closed }`: `load` redraws the current page (pass it to
 * row actions), `applyFilters` writes `filters` to the address and goes back to the first page,
 * `close` stops drawing (the page's cleanup), `closed` says whether it did.
 */
export function pagedList({ box, loadingText, fetchPage, empty, draw, pagerLabel, drawn, filters }) {
  const cursors = [null];
  let pageIndex = 0;
  let closed = false;
  let loadSeq = 0;

  async function load() {
    // Only the latest of overlapping reloads is drawn.
    const seq = ++loadSeq;
    if (!box.querySelector('table')) clear(box).append(loading(loadingText));
    try {
      const { items, page } = await fetchPage(cursors[pageIndex]);
      if (closed || seq !== loadSeq) return;
      clear(box);
      if (!items.length) {
        box.append(empty());
        return;
      }
      box.append(draw(items));
      const total = page.total ?? items.length;
      box.append(pager({
        hasPrevious: pageIndex > 0,
        hasNext: !!page.next_cursor,
        label: pagerLabel({ total, items, pageIndex }),
        onPrevious: () => { pageIndex -= 1; clear(box); load(); },
        onNext: () => { cursors[pageIndex + 1] = page.next_cursor; pageIndex += 1; clear(box); load(); },
      }));
      if (drawn) drawn(items);
    } catch (e) {
      if (!closed && seq === loadSeq) clear(box).append(errorState(e, load));
    }
  }

  function applyFilters() {
    filtersToAddress(filters);
    cursors.length = 1;
    pageIndex = 0;
    clear(box);
    return load();
  }

  return {
    load,
    applyFilters,
    close: () => { closed = true; },
    get closed() { return closed; },
  };
}
