//! Waiting requests of one quota, fair across clients: one FIFO per inbound identity, the
//! clients served in turn (round robin), so one greedy client cannot starve the others.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Fair<T> {
    clients: VecDeque<(String, VecDeque<T>)>,
    len: usize,
}

impl<T> Default for Fair<T> {
    fn default() -> Self {
        Fair {
            clients: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Fair<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue `item` behind `client`'s earlier ones.
    pub fn push(&mut self, client: &str, item: T) {
        self.len += 1;
        match self.clients.iter_mut().find(|(c, _)| c == client) {
            Some((_, q)) => q.push_back(item),
            None => self
                .clients
                .push_back((client.to_owned(), VecDeque::from([item]))),
        }
    }

    /// The next item: the oldest of the client whose turn it is.
    pub fn front(&self) -> Option<&T> {
        self.clients.front().and_then(|(_, q)| q.front())
    }

    /// Take the next item; that client's turn passes to the next client.
    pub fn pop(&mut self) -> Option<T> {
        let (client, mut q) = self.clients.pop_front()?;
        let item = q.pop_front();
        if !q.is_empty() {
            self.clients.push_back((client, q));
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Drop items for which `keep` is false (requests that stopped waiting).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for (_, q) in self.clients.iter_mut() {
            q.retain(&mut keep);
        }
        self.clients.retain(|(_, q)| !q.is_empty());
        self.len = self.clients.iter().map(|(_, q)| q.len()).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_take_turns_each_fifo() {
        let mut f = Fair::default();
        for i in 0..5 {
            f.push("greedy", format!("g{i}"));
        }
        f.push("a", "a0".to_string());
        f.push("b", "b0".to_string());
        f.push("a", "a1".to_string());
        let order: Vec<String> = std::iter::from_fn(|| f.pop()).collect();
        assert_eq!(order, ["g0", "a0", "b0", "g1", "a1", "g2", "g3", "g4"]);
        assert!(f.is_empty());
    }
}
